// Fused bias + activation: y = act(x + b) with b (cols,) broadcast over the rows of x (rows, cols),
// the backward dx = dy * act'(x + b), and column sums (db) in two deterministic stages.
//
// Entry points (suffix f32 for float, f16 for half; `act` as in gradtensor.fused_reference.ACTIVATIONS):
//   bias_act_forward_<s>(x, b, y, n, cols, act)       n = rows * cols elements, grid-stride
//   bias_act_backward_<s>(dy, x, b, dx, n, cols, act)
//   column_sums_partial_<s>(m, partial, rows, cols, rows_per_chunk)
//       block (32, 8), grid (ceil(cols / 32), chunks): partial[chunk, col] = fp32 sum of m[rows of chunk, col];
//       the host adds the chunks' rows (one small reduction) and casts.
#include "common.cuh"

namespace {

enum Activation { kRelu = 0, kGeluTanh = 1, kGeluErf = 2, kSilu = 3 };

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluTanhCubic = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

template <int ACT>
__device__ __forceinline__ float activate(float z) {
    if (ACT == kRelu) return z > 0.f ? z : 0.f;
    if (ACT == kGeluTanh) return 0.5f * z * (1.f + tanhf(kSqrt2OverPi * (z + kGeluTanhCubic * z * z * z)));
    if (ACT == kGeluErf) return 0.5f * z * (1.f + erff(z * kInvSqrt2));
    return z / (1.f + expf(-z));  // silu; exp overflow gives z / inf = -0, the right limit
}

// d act / dz; relu'(0) = 0 as in PyTorch.
template <int ACT>
__device__ __forceinline__ float activate_grad(float z) {
    if (ACT == kRelu) return z > 0.f ? 1.f : 0.f;
    if (ACT == kGeluTanh) {
        const float t = tanhf(kSqrt2OverPi * (z + kGeluTanhCubic * z * z * z));
        return 0.5f * (1.f + t) + 0.5f * z * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kGeluTanhCubic * z * z);
    }
    if (ACT == kGeluErf) return 0.5f * (1.f + erff(z * kInvSqrt2)) + z * kInvSqrt2Pi * expf(-0.5f * z * z);
    const float s = 1.f / (1.f + expf(-z));
    return s * (1.f + z * (1.f - s));
}

template <int ACT>
struct ActTag {
    static constexpr int value = ACT;
};

// Runs body(ActTag<act>{}) so each activation gets its own loop, with no per-element switch.
template <typename Body>
__device__ __forceinline__ void with_activation(int act, Body&& body) {
    switch (act) {
        case kRelu: body(ActTag<kRelu>{}); break;
        case kGeluTanh: body(ActTag<kGeluTanh>{}); break;
        case kGeluErf: body(ActTag<kGeluErf>{}); break;
        default: body(ActTag<kSilu>{}); break;
    }
}

// Applies out[i] = f(x[i] + b[i % cols], extra[i]) over the whole grid; `extra` is dy for the
// backward and unused (x again) for the forward, so both share one vectorised loop.
template <typename T, typename F>
__device__ __forceinline__ void bias_map(const T* x, const T* extra, const T* b, T* out, long long n, int cols,
                                         F f) {
    const long long worker = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long workers = (long long)blockDim.x * gridDim.x;
    const bool packed = gt::same_alignment(x, out) && gt::same_alignment(x, extra);
    gt::visit_packed<T>(n, worker, workers, gt::elements_to_alignment(x), packed, [&](long long i, auto width) {
        constexpr int W = decltype(width)::value;
        const gt::Pack<T, W> xs = gt::load_pack<W>(x + i);
        const gt::Pack<T, W> es = gt::load_pack<W>(extra + i);
        gt::Pack<T, W> ys;
        int col = (int)(i % cols);
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const float z = gt::to_float(xs.val[k]) + gt::to_float(b[col]);
            ys.val[k] = gt::from_float<T>(f(z, gt::to_float(es.val[k])));
            if (++col == cols) col = 0;
        }
        gt::store_pack<W>(out + i, ys);
    });
}

template <typename T>
__device__ void bias_act_forward(const T* x, const T* b, T* y, long long n, int cols, int act) {
    with_activation(act, [&](auto tag) {
        constexpr int ACT = decltype(tag)::value;
        bias_map(x, x, b, y, n, cols, [](float z, float) { return activate<ACT>(z); });
    });
}

template <typename T>
__device__ void bias_act_backward(const T* dy, const T* x, const T* b, T* dx, long long n, int cols, int act) {
    with_activation(act, [&](auto tag) {
        constexpr int ACT = decltype(tag)::value;
        bias_map(x, dy, b, dx, n, cols, [](float z, float g) { return g * activate_grad<ACT>(z); });
    });
}

template <typename T>
__device__ void column_sums_partial(const T* m, float* partial, long long rows, int cols, long long rows_per_chunk) {
    constexpr int kRows = 8;  // blockDim.y
    const int col = blockIdx.x * 32 + threadIdx.x;
    const long long begin = (long long)blockIdx.y * rows_per_chunk;
    const long long end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
    float sum = 0.f;
    if (col < cols) {
        for (long long r = begin + threadIdx.y; r < end; r += kRows) sum += gt::to_float(m[r * cols + col]);
    }
    sum = gt::sum_over_block_rows<kRows>(sum);  // every thread takes part: it synchronises the block
    if (threadIdx.y == 0 && col < cols) partial[(long long)blockIdx.y * cols + col] = sum;
}

}  // namespace

#define GT_BIAS_ACT_ENTRY_POINTS(SUFFIX, T)                                                                  \
    extern "C" __global__ void bias_act_forward_##SUFFIX(const T* x, const T* b, T* y, long long n, int cols, \
                                                         int act) {                                          \
        bias_act_forward(x, b, y, n, cols, act);                                                             \
    }                                                                                                        \
    extern "C" __global__ void bias_act_backward_##SUFFIX(const T* dy, const T* x, const T* b, T* dx,        \
                                                          long long n, int cols, int act) {                  \
        bias_act_backward(dy, x, b, dx, n, cols, act);                                                       \
    }                                                                                                        \
    extern "C" __global__ void column_sums_partial_##SUFFIX(const T* m, float* partial, long long rows,      \
                                                            int cols, long long rows_per_chunk) {            \
        column_sums_partial(m, partial, rows, cols, rows_per_chunk);                                         \
    }

GT_BIAS_ACT_ENTRY_POINTS(f32, float)
GT_BIAS_ACT_ENTRY_POINTS(f16, gt::half)
