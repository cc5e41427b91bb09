/* KSG neighbour counts: the fast path of transformer_dynamics.mutual_info (method "ksg").

   For every point i of a set of N points (x_i, y_i) (already scaled, finite):
     r_i  = the (k+1)-th smallest of max(|x_i - x_j|, |y_i - y_j|) over all j (the point itself included,
            at distance 0: the distance to its k-th neighbour, Kraskov et al. 2004, algorithm 1),
     nx_i = #{j : |x_i - x_j| < r_i},  ny_i = #{j : |y_i - y_j| < r_i}  (the point itself included).
   These are exactly the numbers of the brute-force O(N^2) computation (same doubles, same comparisons):
   the neighbour search visits points in order of |x_i - x_j| (x sorted) and stops once |x_i - x_j| reaches
   the current (k+1)-th smallest distance (no farther point can lower it). The count along x is read off
   the points the sweep visited (every point nearer than r_i in x is among them), the count along y is a
   binary search in the sorted y; both test the predicates (x_j - x_i < r, x_i - x_j < r), monotone in x_j
   because IEEE subtraction rounds monotonically. O(N log N + N m) per set, m the points within r_i in x.

   Compiled at first use by mutual_info._kernel_lib, without -ffast-math (exact comparisons). */
#include <stdint.h>
#include <stdlib.h>

typedef struct { double v; int i; } pair_t;

static int by_value(const void *a, const void *b) {
    double u = ((const pair_t *)a)->v, w = ((const pair_t *)b)->v;
    return (u > w) - (u < w);
}

/* #{j : |s_j - c| < r} in the ascending array s of n values (c one of them, r >= 0). */
static int count_within(const double *s, int n, double c, double r) {
    int lo = 0, hi = n; /* first index with c - s_j < r (true from there on: c - s_j falls as s_j grows) */
    while (lo < hi) { int m = (lo + hi) / 2; if (c - s[m] < r) hi = m; else lo = m + 1; }
    int a = lo;
    lo = a; hi = n; /* first index with not (s_j - c < r) */
    while (lo < hi) { int m = (lo + hi) / 2; if (s[m] - c < r) lo = m + 1; else hi = m; }
    return lo - a;
}

/* Insert d into the ascending list top[0..*len) that keeps the m smallest values seen (ties kept or not:
   the m-th smallest value is the same). */
static inline void push(double *top, int *len, int m, double d) {
    int j;
    if (*len < m) j = (*len)++;
    else if (d >= top[m - 1]) return;
    else j = m - 1;
    while (j > 0 && top[j - 1] > d) { top[j] = top[j - 1]; j--; }
    top[j] = d;
}

static int one_set(int N, int k, const double *x, const double *y, int32_t *nx, int32_t *ny, pair_t *p,
                   double *xs, double *ys, double *yx, double *top) {
    for (int i = 0; i < N; i++) { p[i].v = y[i]; p[i].i = i; }
    qsort(p, N, sizeof *p, by_value);
    for (int i = 0; i < N; i++) ys[i] = p[i].v;
    for (int i = 0; i < N; i++) { p[i].v = x[i]; p[i].i = i; }
    qsort(p, N, sizeof *p, by_value);
    for (int i = 0; i < N; i++) { xs[i] = p[i].v; yx[i] = y[p[i].i]; } /* y in the order of x */
    const int m = k + 1;
    for (int a = 0; a < N; a++) {
        const int i = p[a].i;
        const double xi = x[i], yi = y[i];
        int len = 0, l = a - 1, r = a + 1;
        push(top, &len, m, 0.0); /* the point itself */
        for (;;) { /* the nearer frontier in x next */
            double dl = l >= 0 ? xi - xs[l] : -1.0, dr = r < N ? xs[r] - xi : -1.0;
            int left;
            if (dl < 0 && dr < 0) break;
            left = dr < 0 || (dl >= 0 && dl <= dr);
            double dx = left ? dl : dr;
            if (len == m && dx >= top[m - 1]) break; /* no farther point can come closer */
            double dy = yi - yx[left ? l : r];
            dy = dy < 0 ? -dy : dy;
            push(top, &len, m, dx > dy ? dx : dy);
            if (left) l--; else r++;
        }
        const double rad = top[m - 1];
        /* the count along x: every point with |x_i - x_j| < rad was visited (the sweep met them in order of
           |x_i - x_j| and stopped at the first one not nearer than rad, or ran out), so it lies in l+1..r-1;
           drop the visited ones not within rad (same predicates as count_within) */
        int lo = l + 1, hi = r - 1;
        while (lo <= a && !(xi - xs[lo] < rad)) lo++;
        while (hi >= a && !(xs[hi] - xi < rad)) hi--;
        nx[i] = hi >= lo ? hi - lo + 1 : 0;
        ny[i] = count_within(ys, N, yi, rad);
    }
    return 0;
}

/* B sets of N points, x and y (B, N) row-major; writes nx, ny (B, N). Returns 0, -1 for bad arguments,
   -2 when out of memory. */
int ksg_counts(int B, int N, int k, const double *x, const double *y, int32_t *nx, int32_t *ny) {
    if (B < 0 || N < 2 || k < 1 || k >= N) return -1;
    pair_t *p = malloc(sizeof *p * (size_t)N);
    double *xs = malloc(sizeof *xs * (size_t)N), *ys = malloc(sizeof *ys * (size_t)N);
    double *yx = malloc(sizeof *yx * (size_t)N), *top = malloc(sizeof *top * (size_t)(k + 1));
    int rc = (p && xs && ys && yx && top) ? 0 : -2;
    for (int b = 0; b < B && rc == 0; b++)
        rc = one_set(N, k, x + (size_t)b * N, y + (size_t)b * N, nx + (size_t)b * N, ny + (size_t)b * N, p, xs,
                     ys, yx, top);
    free(p); free(xs); free(ys); free(yx); free(top);
    return rc;
}
