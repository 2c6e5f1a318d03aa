// Layer normalisation over the last axis of x (rows, cols): y = (x - mean) * rstd * w + b with
// fp32 statistics (mean and rstd = 1 / sqrt(biased var + eps) are saved for the backward).
// The weight and bias are float32 whatever the data type (the host converts them: cols elements).
//
// Entry points (suffix f32 / f16):
//   layer_norm_forward_<s>(x, w, b, y, mean, rstd, rows, cols, eps)             one block per row
//   layer_norm_backward_dx_<s>(dy, x, w, mean, rstd, dx, rows, cols)            one block per row
//   layer_norm_backward_params_partial_<s>(dy, x, mean, rstd, dw_partial, db_partial, rows, cols,
//                                          rows_per_chunk)
//       block (32, 8), grid (ceil(cols / 32), chunks): per chunk of rows, the fp32 column sums of
//       dy * xhat (dw) and dy (db); the host adds the chunks.
#include "common.cuh"

namespace {

// Welford states (count, mean, sum of squared deviations) merged with Chan's formula: one pass over
// the row, without the cancellation of sum(x^2) - n * mean^2 when |mean| >> std.
struct WelfordCombine {
    __device__ __forceinline__ float3 operator()(float3 a, float3 b) const {
        if (a.x == 0.f) return b;
        if (b.x == 0.f) return a;
        const float count = a.x + b.x;
        const float delta = b.y - a.y;
        return make_float3(count, a.y + delta * (b.x / count), a.z + b.z + delta * delta * (a.x * b.x / count));
    }
};

struct Sum2 {
    __device__ __forceinline__ float2 operator()(float2 a, float2 b) const { return make_float2(a.x + b.x, a.y + b.y); }
};

template <typename T>
__device__ void layer_norm_forward(const T* x, const float* w, const float* b, T* y, float* mean_out,
                                   float* rstd_out, long long rows, int cols, float eps) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* in = x + row * cols;
        T* out = y + row * cols;
        float3 stats = make_float3(0.f, 0.f, 0.f);
        gt::visit_packed<T>(cols, threadIdx.x, blockDim.x, gt::elements_to_alignment(in), true,
                            [&](long long i, auto width) {
                                constexpr int W = decltype(width)::value;
                                const gt::Pack<T, W> xs = gt::load_pack<W>(in + i);
#pragma unroll
                                for (int k = 0; k < W; ++k) {
                                    const float v = gt::to_float(xs.val[k]);
                                    stats.x += 1.f;
                                    const float delta = v - stats.y;
                                    stats.y += delta / stats.x;
                                    stats.z += delta * (v - stats.y);
                                }
                            });
        stats = gt::block_allreduce(stats, WelfordCombine{});
        const float mean = stats.y;
        const float rstd = 1.f / sqrtf(stats.z / cols + eps);
        if (threadIdx.x == 0) {
            mean_out[row] = mean;
            rstd_out[row] = rstd;
        }
        gt::map_row(in, out, cols, [&](long long i, float v) { return (v - mean) * rstd * w[i] + b[i]; });
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, the gradient through the
// normalisation (the mean and the variance both depend on every element of the row).
template <typename T>
__device__ void layer_norm_backward_dx(const T* dy, const T* x, const float* w, const float* mean,
                                       const float* rstd, T* dx, long long rows, int cols) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* x_row = x + row * cols;
        const T* dy_row = dy + row * cols;
        T* dx_row = dx + row * cols;
        const float m = mean[row];
        const float r = rstd[row];
        const int head = gt::elements_to_alignment(x_row);
        const bool packed = gt::same_alignment(x_row, dy_row);
        float2 sums = make_float2(0.f, 0.f);  // sum of g, sum of g * xhat
        gt::visit_packed<T>(cols, threadIdx.x, blockDim.x, head, packed, [&](long long i, auto width) {
            constexpr int W = decltype(width)::value;
            const gt::Pack<T, W> xs = gt::load_pack<W>(x_row + i);
            const gt::Pack<T, W> dys = gt::load_pack<W>(dy_row + i);
#pragma unroll
            for (int k = 0; k < W; ++k) {
                const float g = gt::to_float(dys.val[k]) * w[i + k];
                sums.x += g;
                sums.y += g * ((gt::to_float(xs.val[k]) - m) * r);
            }
        });
        sums = gt::block_allreduce(sums, Sum2{});
        const float mean_g = sums.x / cols;
        const float mean_g_xhat = sums.y / cols;
        gt::visit_packed<T>(cols, threadIdx.x, blockDim.x, head, packed && gt::same_alignment(x_row, dx_row),
                            [&](long long i, auto width) {
                                constexpr int W = decltype(width)::value;
                                const gt::Pack<T, W> xs = gt::load_pack<W>(x_row + i);
                                const gt::Pack<T, W> dys = gt::load_pack<W>(dy_row + i);
                                gt::Pack<T, W> dxs;
#pragma unroll
                                for (int k = 0; k < W; ++k) {
                                    const float g = gt::to_float(dys.val[k]) * w[i + k];
                                    const float xhat = (gt::to_float(xs.val[k]) - m) * r;
                                    dxs.val[k] = gt::from_float<T>(r * (g - mean_g - xhat * mean_g_xhat));
                                }
                                gt::store_pack<W>(dx_row + i, dxs);
                            });
    }
}

template <typename T>
__device__ void layer_norm_backward_params_partial(const T* dy, const T* x, const float* mean, const float* rstd,
                                                   float* dw_partial, float* db_partial, long long rows, int cols,
                                                   long long rows_per_chunk) {
    constexpr int kRows = 8;  // blockDim.y
    const int col = blockIdx.x * 32 + threadIdx.x;
    const long long begin = (long long)blockIdx.y * rows_per_chunk;
    const long long end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
    float dw = 0.f;
    float db = 0.f;
    if (col < cols) {
        for (long long r = begin + threadIdx.y; r < end; r += kRows) {
            const float g = gt::to_float(dy[r * cols + col]);
            dw += g * ((gt::to_float(x[r * cols + col]) - mean[r]) * rstd[r]);
            db += g;
        }
    }
    dw = gt::sum_over_block_rows<kRows>(dw);  // every thread takes part: it synchronises the block
    db = gt::sum_over_block_rows<kRows>(db);
    if (threadIdx.y == 0 && col < cols) {
        dw_partial[(long long)blockIdx.y * cols + col] = dw;
        db_partial[(long long)blockIdx.y * cols + col] = db;
    }
}

}  // namespace

#define GT_LAYER_NORM_ENTRY_POINTS(SUFFIX, T)                                                                 \
    extern "C" __global__ void layer_norm_forward_##SUFFIX(const T* x, const float* w, const float* b, T* y,  \
                                                           float* mean, float* rstd, long long rows, int cols, \
                                                           float eps) {                                       \
        layer_norm_forward(x, w, b, y, mean, rstd, rows, cols, eps);                                          \
    }                                                                                                         \
    extern "C" __global__ void layer_norm_backward_dx_##SUFFIX(const T* dy, const T* x, const float* w,       \
                                                               const float* mean, const float* rstd, T* dx,   \
                                                               long long rows, int cols) {                    \
        layer_norm_backward_dx(dy, x, w, mean, rstd, dx, rows, cols);                                         \
    }                                                                                                         \
    extern "C" __global__ void layer_norm_backward_params_partial_##SUFFIX(                                   \
        const T* dy, const T* x, const float* mean, const float* rstd, float* dw_partial, float* db_partial,  \
        long long rows, int cols, long long rows_per_chunk) {                                                 \
        layer_norm_backward_params_partial(dy, x, mean, rstd, dw_partial, db_partial, rows, cols,             \
                                           rows_per_chunk);                                                   \
    }

GT_LAYER_NORM_ENTRY_POINTS(f32, float)
GT_LAYER_NORM_ENTRY_POINTS(f16, gt::half)
