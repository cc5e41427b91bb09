/* Gaussian kernel sums on a grid: the fast path of transformer_dynamics.mutual_info (method "kde").

   S_i = sum_j exp(-|z_i - z_j|^2 / 2) for every point of a set of N points z (d = 1 or 2 coordinates,
   already whitened and divided by the bandwidth, so the kernel is the isotropic unit Gaussian), through
   the split exp(-(x - y)^2 / 2) = h sqrt(2 / pi) * sum_g exp(-(x - g)^2) exp(-(g - y)^2) per axis (g: grid
   nodes of step h; a trapezoid rule on a Gaussian of variance 1/4, relative error per pair at most
   2 sum_k exp(-pi^2 k^2 / (2 h^2)) per axis, 2.2e-6 at h = 0.6). Each point spreads its weights
   exp(-(x - g)^2) to the K = 16 nodes around it per axis (beyond them the weight is < exp(-(8 h)^2),
   1e-10 at h = 0.6), the grid holds the summed outer products, and each point reads its sum back from
   the same K^d nodes: O(N K^d) per set instead of O(N^2). Points farther than the grid allows from the
   set's centre (gmax nodes per axis) are summed exactly, as sources and as targets. Every set is checked
   against the exact sum at its check_k points of smallest sum (the largest relative error); a set that
   fails, or has more than max_far far points, gets status 0: the caller sums it exactly.

   Compiled at first use by mutual_info._grid_lib (cc -O3 -march=native -ffast-math); the inputs must be
   finite (the caller filters). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define K 16 /* grid nodes per axis a point spreads to: floor(u) - KL ... floor(u) + K - 1 - KL */
#define KL 7
#define NP 4  /* partial grids in 1-D */
#define NP2 2 /* partial grids in 2-D */

typedef float v16 __attribute__((vector_size(64)));
static inline v16 loadu(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void storeu(float *p, v16 v) { memcpy(p, &v, sizeof v); }
static inline float hsum(v16 v) { float s = 0.f; for (int k = 0; k < K; k++) s += v[k]; return s; }

/* w[i][k] = exp(-c (k - KL - delta[i])^2), 0 <= delta < 1, for M points, as exp(-c d (d + 2 KL)) r^k e3[k] with
   r = exp(2 c d) and e3[k] = exp(-c (k - KL)^2): two exp per point (one vectorised loop, double), r^k as the
   product of r, r^2, r^4, r^8 (squared in double, each rounded to float once) chosen by the bits of k.
   buf: (2 M) doubles. */
static void weights(int M, const double *delta, double c, float *restrict w, double *restrict buf) {
    double *s = buf, *r = buf + M;
    if (c > 1.0) { /* a coarse grid (h > 1): r^15 could overflow a float; exp per weight */
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++) w[i * K + k] = (float)exp(-c * (k - KL - delta[i]) * (k - KL - delta[i]));
        return;
    }
    for (int i = 0; i < M; i++) {
        s[i] = exp(-c * delta[i] * (delta[i] + 2 * KL));
        r[i] = exp(2 * c * delta[i]);
    }
    v16 e3, b0, b1, b2, b3;
    for (int k = 0; k < K; k++) {
        e3[k] = (float)exp(-c * (k - KL) * (k - KL));
        b0[k] = k & 1; b1[k] = (k >> 1) & 1; b2[k] = (k >> 2) & 1; b3[k] = (k >> 3) & 1;
    }
    for (int i = 0; i < M; i++) {
        const double r1 = r[i], r2 = r1 * r1, r4 = r2 * r2, r8 = r4 * r4;
        const v16 v = (1.f + b0 * (float)(r1 - 1)) * (1.f + b1 * (float)(r2 - 1)) * (1.f + b2 * (float)(r4 - 1))
                      * (1.f + b3 * (float)(r8 - 1));
        storeu(w + (size_t)i * K, ((float)s[i] * e3) * v);
    }
}

/* v is finite (a bit test: -ffast-math may fold isfinite away) */
static int finite_bits(double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return ((u >> 52) & 0x7ff) != 0x7ff;
}

/* exact sum_j exp(-|z_i - z_j|^2 / 2) at one point i; tmp[j] holds the terms */
static double exact_at(int N, int d, const double *restrict z, int i, float *restrict tmp) {
    const double xi = z[i * d];
    if (d == 1) {
        for (int j = 0; j < N; j++) tmp[j] = (float)(-0.5 * (z[j] - xi) * (z[j] - xi));
    } else {
        const double yi = z[i * d + 1];
        for (int j = 0; j < N; j++) {
            double dx = z[2 * j] - xi, dy = z[2 * j + 1] - yi;
            tmp[j] = (float)(-0.5 * (dx * dx + dy * dy));
        }
    }
    double s = 0.0;
    for (int j = 0; j < N; j++) {
        tmp[j] = expf(fmaxf(tmp[j], -80.f)); /* no denormals */
        s += tmp[j];
    }
    return s;
}

/* One point set. z: (N, d) whitened, bandwidth-scaled points; box, all_in: from set_box; out: (N,) kernel
   sums. Returns 1 when gridded and checked, 0 when the caller must sum the set exactly. Work buffers:
   grid (gmax^d, NP times in 1-D, NP2 in 2-D), w (N d K), delta (3 N), start (N d), core (N), list (N), tmp (N). */
static int one_set(int N, int d, const double *z, const double *box, int all_in, double h, int gmax, int max_far,
                   int check_k, double rtol, double *out, float *grid, float *w, double *delta, int *start,
                   uint8_t *core, int *list, float *tmp) {
    const double half = 0.5 * (gmax - K - 1) * h, *center = box;
    double lo[2] = {box[2], box[3]}, hi[2] = {box[4], box[5]};
    int M = 0, F = 0; /* list: the M core points, then the F far ones from the end */
    if (all_in) { /* the common case: every point on the grid */
        memset(core, 1, N);
        for (int i = 0; i < N; i++) list[i] = i;
        M = N;
    } else {
        lo[0] = lo[1] = INFINITY;
        hi[0] = hi[1] = -INFINITY;
        for (int i = 0; i < N; i++) {
            int ok = 1;
            for (int a = 0; a < d; a++) ok &= fabs(z[i * d + a] - center[a]) <= half;
            core[i] = (uint8_t)ok;
            if (!ok) { if (++F > max_far) return 0; list[N - F] = i; continue; }
            list[M++] = i;
            for (int a = 0; a < d; a++) {
                double v = z[i * d + a];
                lo[a] = v < lo[a] ? v : lo[a];
                hi[a] = v > hi[a] ? v : hi[a];
            }
        }
    }
    if (M == 0) return 0;
    int G[2] = {1, 1};
    for (int a = 0; a < d; a++) {
        G[a] = (int)floor((hi[a] - lo[a]) / h) + K;
        for (int m = 0; m < M; m++) {
            double u = (z[list[m] * d + a] - lo[a]) / h, f = floor(u);
            start[a * N + m] = (int)f; /* nodes f .. f + K - 1 of a grid whose node 0 is at lo - KL h */
            delta[m] = u - f;
        }
        weights(M, delta, h * h, w + (size_t)a * N * K, delta + N); /* spreading kernel exp(-(z - node)^2) */
    }
    const double cst = pow(h * sqrt(2.0 / M_PI), d);
    const float *wx = w, *wy = w + (size_t)N * K;
    const int *sx = start, *sy = start + N;
    /* Spreading writes np partial grids in turn (point m to grid m % np), summed afterwards: a point's
       read-modify-write then rarely overlaps the previous points' stores still in flight (an unaligned
       overlap cannot be forwarded and stalls): NP grids in 1-D (measured 1.2x faster), NP2 in 2-D (a 2-D
       grid is larger; 2 measured 5% faster than 1 over a whole MI, 4 no faster than 1). */
    const int np = d == 1 ? NP : NP2;
    const size_t size = (size_t)G[0] * (d == 1 ? 1 : G[1]) + K, Gy = d == 1 ? 0 : G[1];
    memset(grid, 0, sizeof(float) * size * np);
    if (d == 1) {
        for (int m = 0; m < M; m++) {
            float *g = grid + (m % np) * size + sx[m];
            storeu(g, loadu(g) + loadu(wx + m * K));
        }
    } else {
        for (int m = 0; m < M; m++) {
            const v16 b = loadu(wy + m * K);
            const float *a = wx + m * K;
            float *g = grid + (m % np) * size + sx[m] * Gy + sy[m];
            for (int p = 0; p < K; p++, g += Gy) storeu(g, loadu(g) + a[p] * b);
        }
    }
    for (int j = 1; j < np; j++)
        for (size_t i = 0; i < size; i++) grid[i] += grid[j * size + i];
    if (d == 1) {
        for (int m = 0; m < M; m++) out[list[m]] = cst * hsum(loadu(grid + sx[m]) * loadu(wx + m * K));
    } else {
        for (int m = 0; m < M; m++) {
            const float *a = wx + m * K, *g = grid + sx[m] * Gy + sy[m];
            v16 acc = {0};
            for (int p = 0; p < K; p++, g += Gy) acc += a[p] * loadu(g);
            out[list[m]] = cst * hsum(acc * loadu(wy + m * K));
        }
    }
    /* far points: their whole sums exact, and their kernels added exactly to the core points' sums */
    for (int f = N - F; f < N; f++) {
        const int i = list[f];
        double tot = exact_at(N, d, z, i, tmp);
        for (int j = 0; j < N; j++) if (core[j]) out[j] += tmp[j];
        out[i] = tot;
    }
    /* check: the exact sum at the check_k core points of smallest sum (the largest relative error) */
    int sel[64], ns = 0;
    check_k = check_k < 64 ? check_k : 64;
    for (int m = 0; m < M && check_k > 0; m++) { /* one pass, insertion into the check_k smallest so far */
        const int i = list[m];
        if (ns == check_k && out[i] >= out[sel[ns - 1]]) continue;
        int r = ns < check_k ? ns++ : ns - 1;
        for (; r > 0 && out[sel[r - 1]] > out[i]; r--) sel[r] = sel[r - 1];
        sel[r] = i;
    }
    for (int r = 0; r < ns; r++) {
        double ex = exact_at(N, d, z, sel[r], tmp);
        if (!finite_bits(out[sel[r]]) || !(fabs(out[sel[r]] / ex - 1.0) <= rtol)) return 0;
    }
    return 1;
}

/* the k-th smallest of v[0..n) (reorders v) */
static double select_kth(double *v, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        double pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) { double t = v[i]; v[i] = v[j]; v[j] = t; i++; j--; }
        }
        if (k <= j) hi = j; else if (k >= i) lo = i; else break;
    }
    return v[k];
}

typedef struct {
    float *grid, *w, *tmp;
    double *delta, *z;
    int *start, *list;
    uint8_t *core;
} work_t;

static int work_alloc(work_t *W, int N, int d, int gmax) {
    size_t gsize = d == 1 ? (size_t)gmax : (size_t)gmax * gmax;
    W->grid = malloc(sizeof(float) * (gsize + K) * (d == 1 ? NP : NP2));
    W->w = malloc(sizeof(float) * (size_t)N * d * K);
    W->tmp = malloc(sizeof(float) * N);
    W->delta = malloc(sizeof(double) * 3 * N);
    W->z = malloc(sizeof(double) * (size_t)N * d);
    W->start = malloc(sizeof(int) * (size_t)N * d);
    W->list = malloc(sizeof(int) * N);
    W->core = malloc(N);
    return W->grid && W->w && W->tmp && W->delta && W->z && W->start && W->list && W->core;
}

static void work_free(work_t *W) {
    free(W->grid); free(W->w); free(W->tmp); free(W->delta); free(W->z); free(W->start); free(W->list);
    free(W->core);
}

/* box = (centre, lo, hi) per axis of the grid: the centre is the midrange, or the median where the set is
   wider than the grid. Returns 1 when every point is on the grid. */
static int set_box(int N, int d, const double *z, double h, int gmax, double *box, double *buf) {
    int all_in = 1;
    for (int a = 0; a < d; a++) {
        double lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < N; i++) {
            double v = z[i * d + a];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        box[a] = 0.5 * (lo + hi);
        box[2 + a] = lo;
        box[4 + a] = hi;
        if ((hi - lo) / h + K + 1 > gmax) {
            for (int i = 0; i < N; i++) buf[i] = z[i * d + a];
            box[a] = select_kth(buf, N, N / 2);
            all_in = 0;
        }
    }
    return all_in;
}

static int grid_set(int N, int d, const double *z, double h, int gmax, int max_far, int check_k, double rtol,
                    double *out, work_t *W) {
    double box[6] = {0, 0, 0, 0, 0, 0};
    int all_in = set_box(N, d, z, h, gmax, box, W->delta);
    return one_set(N, d, z, box, all_in, h, gmax, max_far, check_k, rtol, out, W->grid, W->w, W->delta, W->start,
                   W->core, W->list, W->tmp);
}

/* B sets. z: (B, N, d) float64; out: (B, N) float64 kernel sums; status: (B,) 1 gridded, 0 not (the caller
   sums that set exactly). Returns 0, or < 0 on bad arguments (-1) or no memory (-2). */
int kde_grid_sums(int B, int N, int d, const double *z, double h, int gmax, int max_far, int check_k,
                  double rtol, double *out, int8_t *status) {
    if (d < 1 || d > 2 || gmax <= K + 1 || N < 1) return -1;
    work_t W;
    int ok = work_alloc(&W, N, d, gmax);
    for (int b = 0; b < B && ok; b++)
        status[b] = (int8_t)grid_set(N, d, z + (size_t)b * N * d, h, gmax, max_far, check_k, rtol,
                                     out + (size_t)b * N, &W);
    work_free(&W);
    return ok ? 0 : -2;
}

/* log of scipy's gaussian_kde density (+ eps) at its own points of one set of N samples: d = 1 (x) or d = 2 (x, y;
   the full 2x2 covariance). The same whitening as mutual_info._kde_log_density_1d and _2d (Scott's factor
   N^(-1/(d + 4)), unbiased covariance, Cholesky), then the gridded sums. out: (N,). Returns 1 done, 0 not
   (constant or collinear data, or a set the grid could not serve: the caller computes it). */
static int log_density_set(int N, int d, const double *xb, const double *yb, double f, double eps, double h,
                           int gmax, int max_far, int check_k, double rtol, double *o, work_t *W) {
    double mx = 0, my = 0, vx = 0, vy = 0, cxy = 0, norm;
    if (d == 1) yb = xb;
    for (int i = 0; i < N; i++) { mx += xb[i]; my += yb[i]; }
    mx /= N; my /= N;
    for (int i = 0; i < N; i++) {
        double dx = xb[i] - mx, dy = yb[i] - my;
        vx += dx * dx; vy += dy * dy; cxy += dx * dy;
    }
    vx /= N - 1; vy /= N - 1; cxy /= N - 1;
    if (!finite_bits(vx) || !finite_bits(vy) || !finite_bits(cxy) || !(vx > 0))
        return 0; /* NaN/inf input or constant */
    const double l11 = sqrt(vx);
    if (d == 1) {
        for (int i = 0; i < N; i++) W->z[i] = (xb[i] - mx) / (l11 * f);
        norm = 1.0 / (N * sqrt(2 * M_PI) * f * l11);
    } else {
        const double l21 = cxy / l11, r22 = vy - l21 * l21;
        if (!(r22 > 1e-12 * vy)) return 0;
        const double l22 = sqrt(r22);
        for (int i = 0; i < N; i++) {
            double a = (xb[i] - mx) / l11;
            W->z[2 * i] = a / f;
            W->z[2 * i + 1] = (yb[i] - my - l21 * a) / l22 / f;
        }
        norm = 1.0 / (N * 2 * M_PI * f * f * l11 * l22);
    }
    if (!grid_set(N, d, W->z, h, gmax, max_far, check_k, rtol, o, W)) return 0;
    for (int i = 0; i < N; i++) o[i] = log(o[i] * norm + eps);
    return 1;
}

/* log_density_set for B sets: x: (B, N) (d = 1) or x, y: (B, N) each (d = 2); out: (B, N); status: (B,) 1 done,
   0 not. Returns as kde_grid_sums. */
int kde_log_density(int B, int N, int d, const double *x, const double *y, double eps, double h, int gmax,
                    int max_far, int check_k, double rtol, double *out, int8_t *status) {
    if (d < 1 || d > 2 || gmax <= K + 1 || N < 2 || (d == 2 && !y)) return -1;
    work_t W;
    int ok = work_alloc(&W, N, d, gmax);
    const double f = pow((double)N, -1.0 / (d + 4));
    for (int b = 0; b < B && ok; b++)
        status[b] = (int8_t)log_density_set(N, d, x + (size_t)b * N, d == 2 ? y + (size_t)b * N : NULL, f, eps, h,
                                            gmax, max_far, check_k, rtol, out + (size_t)b * N, &W);
    work_free(&W);
    return ok ? 0 : -2;
}

/* The KDE mutual information of U units between successive sublayers, straight from a stream: for each unit its
   L sublayers' 1-D log densities (each shared by the two transitions that touch it) and the L - 1 2-D ones, as
   kde_log_density computes them, and mi[t] = mean_i(lxy_i - lx_i - ly_i). The stream: element (i, l) of unit u at
   src[i * si + l * sl + cols[u]] (elements of float32, or float64 when f64), for N samples and L sublayers; units
   are read in groups of up to 16 (neighbouring columns share cache lines). mi: (U, L - 1); status: (U,) 1 done,
   0 not (some set was not: the caller computes that unit). gmax1, gmax2: the grid's nodes per axis in 1-D and
   2-D. Returns as kde_grid_sums. */
int kde_mi_units(int U, int N, int L, const void *src, int f64, int64_t si, int64_t sl, const int64_t *cols,
                 double eps, double h, int gmax1, int gmax2, int max_far, int check_k, double rtol, double *mi,
                 int8_t *status) {
    if (U < 0 || N < 2 || L < 2 || gmax1 <= K + 1 || gmax2 <= K + 1) return -1;
    int G = 16;
    const size_t per_unit = (size_t)L * N * sizeof(double);
    while (G > 1 && G * per_unit > ((size_t)64 << 20)) G /= 2;
    work_t W1 = {0}, W2 = {0};
    double *buf = malloc(per_unit * G), *lv = malloc(per_unit), *lxy = malloc(sizeof(double) * N);
    int ok = work_alloc(&W1, N, 1, gmax1) & work_alloc(&W2, N, 2, gmax2) & (buf && lv && lxy);
    const double f1 = pow((double)N, -1.0 / 5.0), f2 = pow((double)N, -1.0 / 6.0);
    const float *s32 = src;
    const double *s64 = src;
    for (int u0 = 0; u0 < U && ok; u0 += G) {
        const int g = U - u0 < G ? U - u0 : G;
        for (int l = 0; l < L; l++) /* gather: buf[k] (L, N) for the g units u0 .. u0 + g - 1 */
            for (int i = 0; i < N; i++) {
                const int64_t at = i * si + l * sl;
                for (int k = 0; k < g; k++)
                    buf[((size_t)k * L + l) * N + i] = f64 ? s64[at + cols[u0 + k]] : (double)s32[at + cols[u0 + k]];
            }
        for (int k = 0; k < g; k++) {
            const double *v = buf + (size_t)k * L * N;
            double *m = mi + (size_t)(u0 + k) * (L - 1);
            int done = 1;
            for (int l = 0; l < L && done; l++)
                done = log_density_set(N, 1, v + (size_t)l * N, NULL, f1, eps, h, gmax1, max_far, check_k, rtol,
                                       lv + (size_t)l * N, &W1);
            for (int t = 0; t < L - 1 && done; t++) {
                done = log_density_set(N, 2, v + (size_t)t * N, v + (size_t)(t + 1) * N, f2, eps, h, gmax2, max_far,
                                       check_k, rtol, lxy, &W2);
                double s = 0.0;
                const double *a = lv + (size_t)t * N, *b = lv + (size_t)(t + 1) * N;
                for (int i = 0; i < N; i++) s += lxy[i] - a[i] - b[i];
                m[t] = s / N;
            }
            status[u0 + k] = (int8_t)done;
        }
    }
    work_free(&W1);
    work_free(&W2);
    free(buf); free(lv); free(lxy);
    return ok ? 0 : -2;
}
