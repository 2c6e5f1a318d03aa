// Dropout with a counter-based random generator: Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC'11) keyed by the 64-bit seed. Element i of a call at `offset`
// uses word (offset + i) % 4 of the block numbered (offset + i) / 4, so the mask depends on
// (seed, offset + i) alone: it can be regenerated exactly (gradient checkpointing) and matches
// gradtensor.fused_reference bit for bit.
//
// An element is kept when its 32-bit word is >= threshold = round(p * 2^32) (an integer compare, the
// same on every device); kept elements are scaled by 1 / (1 - p), dropped ones are 0.
//
// Entry points (suffix f32 / f16; the mask is one byte, 0 or 1, per element):
//   dropout_mask(mask, n, seed, offset, threshold)
//   dropout_forward_<s>(x, y, mask, n, seed, offset, threshold, scale)
//   dropout_backward_<s>(dy, mask, dx, n, scale)        dx = mask ? dy * scale : 0
#include "common.cuh"

namespace {

constexpr unsigned int kPhiloxM0 = 0xD2511F53u;
constexpr unsigned int kPhiloxM1 = 0xCD9E8D57u;
constexpr unsigned int kPhiloxW0 = 0x9E3779B9u;  // key increments (golden ratio, sqrt(3) - 1)
constexpr unsigned int kPhiloxW1 = 0xBB67AE85u;

__device__ __forceinline__ uint4 philox4x32_10(uint4 counter, uint2 key) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key.x += kPhiloxW0;
            key.y += kPhiloxW1;
        }
        const unsigned int hi0 = __umulhi(kPhiloxM0, counter.x);
        const unsigned int lo0 = kPhiloxM0 * counter.x;
        const unsigned int hi1 = __umulhi(kPhiloxM1, counter.z);
        const unsigned int lo1 = kPhiloxM1 * counter.z;
        counter = make_uint4(hi1 ^ counter.y ^ key.x, lo1, hi0 ^ counter.w ^ key.y, lo0);
    }
    return counter;
}

// The four random words of block `group` of stream `seed` (counter = (group lo, group hi, 0, 0)).
__device__ __forceinline__ uint4 random_group(unsigned long long group, unsigned long long seed) {
    return philox4x32_10(make_uint4((unsigned int)group, (unsigned int)(group >> 32), 0u, 0u),
                         make_uint2((unsigned int)seed, (unsigned int)(seed >> 32)));
}

__device__ __forceinline__ unsigned int word(const uint4& r, int k) {
    return k == 0 ? r.x : k == 1 ? r.y : k == 2 ? r.z : r.w;
}

__device__ __forceinline__ long long grid_worker() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_workers() { return (long long)blockDim.x * gridDim.x; }

// Calls f(e, keep) for the elements e in [begin, n), one Philox block (4 elements) per step, so each
// block is generated once even when `offset` is not a multiple of 4.
template <typename F>
__device__ __forceinline__ void for_each_keep(long long begin, long long n, unsigned long long seed, long long offset,
                                              unsigned long long threshold, F f) {
    const long long first = (offset + begin) / 4;
    const long long last = (offset + n - 1) / 4;
    GT_GRID_STRIDE_LOOP(g, last - first + 1) {
        const long long group = first + g;
        const uint4 r = random_group((unsigned long long)group, seed);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const long long e = 4 * group + k - offset;
            if (e >= begin && e < n) f(e, word(r, k) >= threshold);
        }
    }
}

template <typename T>
__device__ __forceinline__ T dropped_or_scaled(T v, bool keep, float scale) {
    return gt::from_float<T>(keep ? gt::to_float(v) * scale : 0.f);
}

template <typename T>
__device__ void dropout_forward(const T* x, T* y, unsigned char* mask, long long n, unsigned long long seed,
                                long long offset, unsigned long long threshold, float scale) {
    constexpr int W = gt::Vec16<T>::size;  // 4 or 8: whole Philox blocks per pack when offset % 4 == 0
    long long packed_end = 0;
    if (offset % 4 == 0 && gt::is_aligned16(x) && gt::is_aligned16(y)) {
        const long long packs = n / W;
        GT_GRID_STRIDE_LOOP(p, packs) {
            const gt::Vec16<T> xs = gt::load_vec16(x, p);
            gt::Vec16<T> ys;
#pragma unroll
            for (int j = 0; j < W / 4; ++j) {
                const uint4 r = random_group((unsigned long long)(offset / 4 + p * (W / 4) + j), seed);
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const bool keep = word(r, k) >= threshold;
                    mask[p * W + 4 * j + k] = keep;
                    ys.val[4 * j + k] = dropped_or_scaled(xs.val[4 * j + k], keep, scale);
                }
            }
            gt::store_vec16(y, p, ys);
        }
        packed_end = packs * W;
    }
    for_each_keep(packed_end, n, seed, offset, threshold, [&](long long e, bool keep) {
        mask[e] = keep;
        y[e] = dropped_or_scaled(x[e], keep, scale);
    });
}

template <typename T>
__device__ void dropout_backward(const T* dy, const unsigned char* mask, T* dx, long long n, float scale) {
    gt::visit_packed<T>(n, grid_worker(), grid_workers(), gt::elements_to_alignment(dy), gt::same_alignment(dy, dx),
                        [&](long long i, auto width) {
                            constexpr int W = decltype(width)::value;
                            const gt::Pack<T, W> dys = gt::load_pack<W>(dy + i);
                            gt::Pack<T, W> dxs;
#pragma unroll
                            for (int k = 0; k < W; ++k) {
                                dxs.val[k] = dropped_or_scaled(dys.val[k], mask[i + k] != 0, scale);
                            }
                            gt::store_pack<W>(dx + i, dxs);
                        });
}

}  // namespace

extern "C" __global__ void dropout_mask(unsigned char* mask, long long n, unsigned long long seed, long long offset,
                                        unsigned long long threshold) {
    for_each_keep(0, n, seed, offset, threshold, [&](long long e, bool keep) { mask[e] = keep; });
}

#define GT_DROPOUT_ENTRY_POINTS(SUFFIX, T)                                                                     \
    extern "C" __global__ void dropout_forward_##SUFFIX(const T* x, T* y, unsigned char* mask, long long n,    \
                                                        unsigned long long seed, long long offset,             \
                                                        unsigned long long threshold, float scale) {           \
        dropout_forward(x, y, mask, n, seed, offset, threshold, scale);                                        \
    }                                                                                                          \
    extern "C" __global__ void dropout_backward_##SUFFIX(const T* dy, const unsigned char* mask, T* dx,        \
                                                         long long n, float scale) {                           \
        dropout_backward(dy, mask, dx, n, scale);                                                              \
    }

GT_DROPOUT_ENTRY_POINTS(f32, float)
GT_DROPOUT_ENTRY_POINTS(f16, gt::half)
