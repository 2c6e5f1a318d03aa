// Multi-tensor kernels: one launch updates many tensors (all parameters of an optimizer), which is
// what makes an optimizer step cost one launch instead of several per parameter.
//
// The host passes a pointer table, an int64 device array laid out as
//   [list 0 pointers (tensors)] ... [list L-1 pointers (tensors)] [sizes (tensors)] [block map (blocks)]
// where list l holds one operand (params, grads, moments...) of every tensor and block map entry b is
// (tensor << 32) | chunk: block b updates elements [chunk * chunk_size, (chunk + 1) * chunk_size) of
// that tensor. A zero pointer marks an operand a step does not use (no momentum buffer, no amsgrad).
//
// Entry points (suffix f32 / f16: all operands of one launch have that type; arithmetic in fp32):
//   sgd_step_<s>(table, tensors, chunk_size, lr, momentum, grad_weight, weight_decay, nesterov, first_step,
//                maximize, device_lr, skip)                        lists: param, grad, momentum buffer
//       grad_weight = 1 - dampening, folded on the host so it is rounded once, as in the reference
//   adam_step_<s>(table, tensors, chunk_size, weight_decay, decay_factor, beta1_weight, beta1_complement,
//                 beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, decoupled, maximize,
//                 device_lr, beta1_exact, beta2_exact, weight_decay_exact, skip)
//                                                                  lists: param, grad, exp_avg, exp_avg_sq,
//                                                                         max_exp_avg_sq, step count
//   unscale_and_check_<s>(table, tensors, chunk_size, inv_scale, found_inf, device_inv_scale)   lists: grad
//       grad *= inv_scale; *found_inf = 1 when any result is inf or NaN (never cleared here).
//
// Captured steps (CUDA graphs) cannot take scalars that change between replays by value, so they read
// them from device memory; the pointers are null otherwise and the by-value arguments are used:
//   device_lr (double): the learning rate. Adam then computes its per-step scalars itself, in double
//       precision as the host does, from it, each tensor's step count (list 5, a double counting this
//       step) and the *_exact hyperparameters: decay_factor = 1 - lr * wd, step_size = lr / (1 - beta1^t),
//       bias_correction2_sqrt = sqrt(1 - beta2^t), each rounded to float once.
//   device_inv_scale (float): GradScaler's 1 / scale.
//   skip (int): GradScaler's found_inf; when it is set the step writes nothing (a skipped step).
#include "common.cuh"

namespace {

// The part of one tensor that this block updates.
struct Chunk {
    int tensor;
    long long begin;
    long long count;
};

__device__ __forceinline__ Chunk block_chunk(const long long* table, int lists, int tensors, long long chunk_size) {
    const long long entry = table[(long long)(lists + 1) * tensors + blockIdx.x];
    Chunk c;
    c.tensor = (int)(entry >> 32);
    c.begin = (entry & 0xffffffffll) * chunk_size;
    const long long size = table[(long long)lists * tensors + c.tensor];
    c.count = size - c.begin < chunk_size ? size - c.begin : chunk_size;
    return c;
}

// Operand `list` of the chunk's tensor, at the chunk's first element (null when unused).
template <typename T>
__device__ __forceinline__ T* operand(const long long* table, int list, int tensors, const Chunk& c) {
    T* base = reinterpret_cast<T*>(table[(long long)list * tensors + c.tensor]);
    return base ? base + c.begin : nullptr;
}

// The operand `list` of tensor `tensor` itself (not offset to a chunk): a per-tensor scalar.
template <typename T>
__device__ __forceinline__ const T* tensor_scalar(const long long* table, int list, int tensors, int tensor) {
    return reinterpret_cast<const T*>(table[(long long)list * tensors + tensor]);
}

// True when the device flag says this step is skipped (GradScaler found an inf/NaN gradient).
__device__ __forceinline__ bool skipped(const int* skip) { return skip != nullptr && *skip != 0; }

// Packs only when every operand in use shares the alignment of the first.
__device__ __forceinline__ bool aligned_alike(const void* first, const void* other) {
    return other == nullptr || gt::same_alignment(first, other);
}

template <int W, typename T>
__device__ __forceinline__ gt::Pack<T, W> load_or_zero(const T* ptr) {
    if (ptr) return gt::load_pack<W>(ptr);
    gt::Pack<T, W> zero;
#pragma unroll
    for (int k = 0; k < W; ++k) zero.val[k] = gt::from_float<T>(0.f);
    return zero;
}

// PyTorch's SGD: g += wd * p; buf = first ? g : momentum * buf + grad_weight * g (grad_weight = 1 - dampening);
// g = nesterov ? g + momentum * buf : buf; p -= lr * g.
template <typename T>
__device__ void sgd_step(const long long* table, int tensors, long long chunk_size, float lr, float momentum,
                         float grad_weight, float weight_decay, int nesterov, int first_step, int maximize,
                         const double* device_lr, const int* skip) {
    if (skipped(skip)) return;
    if (device_lr) lr = (float)*device_lr;
    const Chunk c = block_chunk(table, 3, tensors, chunk_size);
    T* param = operand<T>(table, 0, tensors, c);
    const T* grad = operand<T>(table, 1, tensors, c);
    T* buf = momentum != 0.f ? operand<T>(table, 2, tensors, c) : nullptr;
    const bool packed = aligned_alike(param, grad) && aligned_alike(param, buf);
    gt::visit_packed<T>(c.count, threadIdx.x, blockDim.x, gt::elements_to_alignment(param), packed,
                        [&](long long i, auto width) {
                            constexpr int W = decltype(width)::value;
                            gt::Pack<T, W> ps = gt::load_pack<W>(param + i);
                            const gt::Pack<T, W> gs = gt::load_pack<W>(grad + i);
                            gt::Pack<T, W> bs;
                            if (buf && !first_step) bs = gt::load_pack<W>(buf + i);
#pragma unroll
                            for (int k = 0; k < W; ++k) {
                                const float p = gt::to_float(ps.val[k]);
                                float g = gt::to_float(gs.val[k]);
                                if (maximize) g = -g;
                                if (weight_decay != 0.f) g += weight_decay * p;
                                if (buf) {
                                    const float b = first_step ? g
                                                               : momentum * gt::to_float(bs.val[k]) +
                                                                     grad_weight * g;
                                    bs.val[k] = gt::from_float<T>(b);
                                    g = nesterov ? g + momentum * b : b;
                                }
                                ps.val[k] = gt::from_float<T>(p + (-lr) * g);
                            }
                            gt::store_pack<W>(param + i, ps);
                            if (buf) gt::store_pack<W>(buf + i, bs);
                        });
}

// PyTorch's Adam / AdamW (the host folds the step count into step_size = lr / (1 - beta1^t) and
// bias_correction2_sqrt = sqrt(1 - beta2^t)):
//   decoupled: p *= 1 - lr * wd   else: g += wd * p
//   m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g * g
//   vmax = max(vmax, v) with amsgrad (max_exp_avg_sq given)
//   p -= step_size * m / (sqrt(v or vmax) / bias_correction2_sqrt + eps)
template <typename T>
__device__ void adam_step(const long long* table, int tensors, long long chunk_size, float weight_decay,
                          float decay_factor, float beta1_weight, float beta1_complement, float beta2,
                          float one_minus_beta2, float step_size, float bias_correction2_sqrt, float eps,
                          int decoupled, int maximize, const double* device_lr, double beta1_exact,
                          double beta2_exact, double weight_decay_exact, const int* skip) {
    if (skipped(skip)) return;
    const Chunk c = block_chunk(table, 6, tensors, chunk_size);
    if (device_lr) {
        const double lr = *device_lr;
        const double step = *tensor_scalar<double>(table, 5, tensors, c.tensor);
        decay_factor = (float)(1.0 - lr * weight_decay_exact);
        step_size = (float)(lr / (1.0 - pow(beta1_exact, step)));
        bias_correction2_sqrt = (float)sqrt(1.0 - pow(beta2_exact, step));
    }
    T* param = operand<T>(table, 0, tensors, c);
    const T* grad = operand<T>(table, 1, tensors, c);
    T* exp_avg = operand<T>(table, 2, tensors, c);
    T* exp_avg_sq = operand<T>(table, 3, tensors, c);
    T* max_exp_avg_sq = operand<T>(table, 4, tensors, c);
    const bool packed = aligned_alike(param, grad) && aligned_alike(param, exp_avg) &&
                        aligned_alike(param, exp_avg_sq) && aligned_alike(param, max_exp_avg_sq);
    gt::visit_packed<T>(c.count, threadIdx.x, blockDim.x, gt::elements_to_alignment(param), packed,
                        [&](long long i, auto width) {
                            constexpr int W = decltype(width)::value;
                            gt::Pack<T, W> ps = gt::load_pack<W>(param + i);
                            const gt::Pack<T, W> gs = gt::load_pack<W>(grad + i);
                            gt::Pack<T, W> ms = gt::load_pack<W>(exp_avg + i);
                            gt::Pack<T, W> vs = gt::load_pack<W>(exp_avg_sq + i);
                            gt::Pack<T, W> vmaxs = load_or_zero<W>(max_exp_avg_sq ? max_exp_avg_sq + i : nullptr);
#pragma unroll
                            for (int k = 0; k < W; ++k) {
                                float p = gt::to_float(ps.val[k]);
                                float g = gt::to_float(gs.val[k]);
                                if (maximize) g = -g;
                                if (weight_decay != 0.f) {
                                    if (decoupled) p *= decay_factor;
                                    else g += weight_decay * p;
                                }
                                float m = gt::to_float(ms.val[k]);
                                // torch.lerp's two forms: exact at weight 0 and 1
                                m = beta1_weight < 0.5f ? m + beta1_weight * (g - m)
                                                        : g - (g - m) * beta1_complement;
                                const float v = beta2 * gt::to_float(vs.val[k]) + one_minus_beta2 * g * g;
                                float second_moment = v;
                                if (max_exp_avg_sq) {
                                    second_moment = fmaxf(gt::to_float(vmaxs.val[k]), v);
                                    vmaxs.val[k] = gt::from_float<T>(second_moment);
                                }
                                const float denom = sqrtf(second_moment) / bias_correction2_sqrt + eps;
                                ps.val[k] = gt::from_float<T>(p + ((-step_size) * m) / denom);  // rounded as adam_update
                                ms.val[k] = gt::from_float<T>(m);
                                vs.val[k] = gt::from_float<T>(v);
                            }
                            gt::store_pack<W>(param + i, ps);
                            gt::store_pack<W>(exp_avg + i, ms);
                            gt::store_pack<W>(exp_avg_sq + i, vs);
                            if (max_exp_avg_sq) gt::store_pack<W>(max_exp_avg_sq + i, vmaxs);
                        });
}

template <typename T>
__device__ void unscale_and_check(const long long* table, int tensors, long long chunk_size, float inv_scale,
                                  int* found_inf, const float* device_inv_scale) {
    if (device_inv_scale) inv_scale = *device_inv_scale;
    const Chunk c = block_chunk(table, 1, tensors, chunk_size);
    T* grad = operand<T>(table, 0, tensors, c);
    bool all_finite = true;
    gt::visit_packed<T>(c.count, threadIdx.x, blockDim.x, gt::elements_to_alignment(grad), true,
                        [&](long long i, auto width) {
                            constexpr int W = decltype(width)::value;
                            gt::Pack<T, W> gs = gt::load_pack<W>(grad + i);
#pragma unroll
                            for (int k = 0; k < W; ++k) {
                                gs.val[k] = gt::from_float<T>(gt::to_float(gs.val[k]) * inv_scale);
                                // the stored value is checked: a float16 product can overflow on the way back
                                all_finite = all_finite && gt::is_finite(gt::to_float(gs.val[k]));
                            }
                            gt::store_pack<W>(grad + i, gs);
                        });
    if (!all_finite) *found_inf = 1;  // every writer stores the same value: no atomic needed
}

}  // namespace

#define GT_MULTI_TENSOR_ENTRY_POINTS(SUFFIX, T)                                                                \
    extern "C" __global__ void sgd_step_##SUFFIX(const long long* table, int tensors, long long chunk_size,    \
                                                 float lr, float momentum, float grad_weight, float weight_decay, \
                                                 int nesterov, int first_step, int maximize,                   \
                                                 const double* device_lr, const int* skip) {                   \
        sgd_step<T>(table, tensors, chunk_size, lr, momentum, grad_weight, weight_decay, nesterov, first_step,   \
                    maximize, device_lr, skip);                                                                \
    }                                                                                                          \
    extern "C" __global__ void adam_step_##SUFFIX(                                                             \
        const long long* table, int tensors, long long chunk_size, float weight_decay, float decay_factor,     \
        float beta1_weight, float beta1_complement, float beta2, float one_minus_beta2, float step_size,       \
        float bias_correction2_sqrt, float eps, int decoupled, int maximize, const double* device_lr,          \
        double beta1_exact, double beta2_exact, double weight_decay_exact, const int* skip) {                  \
        adam_step<T>(table, tensors, chunk_size, weight_decay, decay_factor, beta1_weight, beta1_complement,   \
                     beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, decoupled, maximize,       \
                     device_lr, beta1_exact, beta2_exact, weight_decay_exact, skip);                           \
    }                                                                                                          \
    extern "C" __global__ void unscale_and_check_##SUFFIX(const long long* table, int tensors,                 \
                                                          long long chunk_size, float inv_scale,               \
                                                          int* found_inf, const float* device_inv_scale) {     \
        unscale_and_check<T>(table, tensors, chunk_size, inv_scale, found_inf, device_inv_scale);              \
    }

GT_MULTI_TENSOR_ENTRY_POINTS(f32, float)
GT_MULTI_TENSOR_ENTRY_POINTS(f16, gt::half)
