// out[M, N] = x[M, K] @ W[N, K]^T with W packed in panels of 32 outputs: P[p][k][j] = W[32p + j, k].
// Every output is one fused multiply-add chain over k = 0..K-1 from zero, whatever M, the tile it
// falls in, the thread or the panel split: a row's result never depends on the rest of the batch.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define NB 32
#define MR 12

extern "C" int specroll_kernel_ok(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}

extern "C" void specroll_pack(const float* w, int64_t n, int64_t k, float* p) {
    int64_t panels = (n + NB - 1) / NB;
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < panels; ++q) {
        float* dst = p + q * k * NB;
        for (int64_t kk = 0; kk < k; ++kk)
            for (int64_t j = 0; j < NB; ++j) {
                int64_t row = q * NB + j;
                dst[kk * NB + j] = row < n ? w[row * k + kk] : 0.0f;
            }
    }
}

#ifdef __AVX512F__
template <int R>
static inline void tile(const float* x, int64_t ldx, const float* p, int64_t k, float* out,
                        int64_t ldo, int64_t cols) {
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; ++kk) {
        __m512 w0 = _mm512_loadu_ps(p + kk * NB);
        __m512 w1 = _mm512_loadu_ps(p + kk * NB + 16);
        for (int r = 0; r < R; ++r) {
            __m512 xb = _mm512_set1_ps(x[r * ldx + kk]);
            acc[r][0] = _mm512_fmadd_ps(xb, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(xb, w1, acc[r][1]);
        }
    }
    __mmask16 m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    __mmask16 m1 = cols >= 32 ? (__mmask16)0xFFFF : cols <= 16 ? (__mmask16)0
                                                               : (__mmask16)((1u << (cols - 16)) - 1);
    for (int r = 0; r < R; ++r) {
        _mm512_mask_storeu_ps(out + r * ldo, m0, acc[r][0]);
        _mm512_mask_storeu_ps(out + r * ldo + 16, m1, acc[r][1]);
    }
}

typedef void (*tile_fn)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t);
static const tile_fn TILES[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>,
                                      tile<7>, tile<8>, tile<9>, tile<10>, tile<11>, tile<12>};
#endif

extern "C" void specroll_linear(const float* x, int64_t m, int64_t k, const float* p, int64_t n,
                                float* out) {
#ifdef __AVX512F__
    int64_t panels = (n + NB - 1) / NB;
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < panels; ++q) {
        const float* pq = p + q * k * NB;
        int64_t cols = n - q * NB < NB ? n - q * NB : NB;
        for (int64_t r0 = 0; r0 < m; r0 += MR) {
            int64_t rows = m - r0 < MR ? m - r0 : MR;
            TILES[rows](x + r0 * k, k, pq, k, out + r0 * n + q * NB, n, cols);
        }
    }
#endif
}
