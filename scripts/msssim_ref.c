/* A tight single-thread MS-SSIM in plain C: the yardstick for cmcbench's own (scripts/bench_msssim.py).

   The same arithmetic as pytorch-msssim with its defaults (5 scales, weights 0.0448 .. 0.1333, an
   11-tap Gaussian with sigma 1.5 applied separably as a valid convolution, K = (0.01, 0.03), data
   range 255, 2x2 average pooling padded by H % 2 and W % 2 on both sides with the zeros counted,
   negative contrast terms clipped to 0, the three channels averaged; the SSIM map only at the coarsest
   scale, the one that uses it). Filtering is float32 like
   pytorch-msssim's; per-scale means are accumulated in double.

   cc -O3 -march=native -shared -fPIC -o msssim_ref.so msssim_ref.c -lm
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define TAPS 11
#define LEVELS 5

/* pytorch-msssim's float32 Gaussian, bit for bit (metrics/msssim.py PYTORCH_MSSSIM_WINDOW). */
static const float G[TAPS] = {0.0010283803567290306f, 0.0075987582094967365f, 0.036000773310661316f,
                              0.10936068743467331f, 0.21300552785396576f, 0.26601171493530273f,
                              0.21300552785396576f, 0.10936068743467331f, 0.036000773310661316f,
                              0.0075987582094967365f, 0.0010283803567290306f};

/* SSIM and contrast-structure means of one channel plane at one scale. */
static void ssim_plane(const float *x, const float *y, int h, int w, const float *g, float *work,
                       int with_ssim, double *ssim_mean, double *cs_mean) {
    const float C1 = (0.01f * 255.f) * (0.01f * 255.f), C2 = (0.03f * 255.f) * (0.03f * 255.f);
    int ow = w - TAPS + 1, oh = h - TAPS + 1;
    float *restrict hx = work, *restrict hy = hx + (size_t)h * ow, *restrict hxx = hy + (size_t)h * ow,
          *restrict hyy = hxx + (size_t)h * ow, *restrict hxy = hyy + (size_t)h * ow;
    for (int r = 0; r < h; r++) {
        const float *restrict a = x + (size_t)r * w, *restrict b = y + (size_t)r * w;
        float *restrict o0 = hx + (size_t)r * ow, *restrict o1 = hy + (size_t)r * ow,
              *restrict o2 = hxx + (size_t)r * ow, *restrict o3 = hyy + (size_t)r * ow,
              *restrict o4 = hxy + (size_t)r * ow;
        for (int c = 0; c < ow; c++) {
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
            for (int k = 0; k < TAPS; k++) {
                float u = a[c + k], v = b[c + k], gk = g[k];
                s0 += gk * u; s1 += gk * v; s2 += gk * (u * u); s3 += gk * (v * v); s4 += gk * (u * v);
            }
            o0[c] = s0; o1[c] = s1; o2[c] = s2; o3[c] = s3; o4[c] = s4;
        }
    }
    float *row = malloc(sizeof(float) * 5 * ow);
    double ssim_sum = 0, cs_sum = 0;
    for (int r = 0; r < oh; r++) {
        float *restrict m1 = row, *restrict m2 = row + ow, *restrict e11 = row + 2 * ow,
              *restrict e22 = row + 3 * ow, *restrict e12 = row + 4 * ow;
        for (int c = 0; c < ow; c++) m1[c] = m2[c] = e11[c] = e22[c] = e12[c] = 0.f;
        for (int k = 0; k < TAPS; k++) {
            float gk = g[k];
            size_t off = (size_t)(r + k) * ow;
            for (int c = 0; c < ow; c++) {
                m1[c] += gk * hx[off + c]; m2[c] += gk * hy[off + c]; e11[c] += gk * hxx[off + c];
                e22[c] += gk * hyy[off + c]; e12[c] += gk * hxy[off + c];
            }
        }
        float rs = 0, rc = 0;
        for (int c = 0; c < ow; c++) {
            float mu1 = m1[c], mu2 = m2[c], mu11 = mu1 * mu1, mu22 = mu2 * mu2, mu12 = mu1 * mu2;
            float s11 = e11[c] - mu11, s22 = e22[c] - mu22, s12 = e12[c] - mu12;
            float cs = (2.f * s12 + C2) / (s11 + s22 + C2);
            rc += cs;
            if (with_ssim) rs += (2.f * mu12 + C1) / (mu11 + mu22 + C1) * cs;
        }
        ssim_sum += rs; cs_sum += rc;
    }
    free(row);
    *ssim_mean = ssim_sum / ((double)oh * ow);
    *cs_mean = cs_sum / ((double)oh * ow);
}

/* 2x2 average pooling, padded by h % 2 and w % 2 on both sides, zeros counted (torch's avg_pool2d). */
static void pool(const float *src, int h, int w, float *dst, int *nh, int *nw) {
    int ph = h % 2, pw = w % 2;
    *nh = (h + 2 * ph - 2) / 2 + 1; *nw = (w + 2 * pw - 2) / 2 + 1;
    for (int r = 0; r < *nh; r++)
        for (int c = 0; c < *nw; c++) {
            float s = 0;
            for (int dr = 0; dr < 2; dr++)
                for (int dc = 0; dc < 2; dc++) {
                    int rr = 2 * r + dr - ph, cc = 2 * c + dc - pw;
                    if (rr >= 0 && rr < h && cc >= 0 && cc < w) s += src[(size_t)rr * w + cc];
                }
            dst[(size_t)r * *nw + c] = s * 0.25f;
        }
}

/* MS-SSIM of two interleaved 8-bit RGB images of h x w pixels. */
double ms_ssim_rgb8(const uint8_t *a, const uint8_t *b, int h, int w) {
    static const double weights[LEVELS] = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};
    const float *g = G;
    size_t n = (size_t)h * w;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    float *px = malloc(sizeof(float) * n), *py = malloc(sizeof(float) * n);
    float *work = malloc(sizeof(float) * 5 * n);
    double total = 0;
    for (int ch = 0; ch < 3; ch++) {
        for (size_t i = 0; i < n; i++) { x[i] = a[3 * i + ch]; y[i] = b[3 * i + ch]; }
        int hh = h, ww = w;
        double value = 1;
        for (int level = 0; level < LEVELS; level++) {
            double s, cs;
            ssim_plane(x, y, hh, ww, g, work, level == LEVELS - 1, &s, &cs);
            if (level < LEVELS - 1) {
                value *= pow(cs > 0 ? cs : 0, weights[level]);
                int nh, nw;
                pool(x, hh, ww, px, &nh, &nw);
                pool(y, hh, ww, py, &nh, &nw);
                float *t = x; x = px; px = t;
                t = y; y = py; py = t;
                hh = nh; ww = nw;
            } else {
                value *= pow(s > 0 ? s : 0, weights[level]);
            }
        }
        total += value;
    }
    free(x); free(y); free(px); free(py); free(work);
    return total / 3;
}
