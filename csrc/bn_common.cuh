// Shared pieces of the BatchNorm (training) + ReLU kernels (bn_reduce.cu, bn_apply.cu) on NHWC
// data viewed as [M pixels, C channels]: block shapes, the deterministic per-block partials and
// the 16-byte-vector test. All these kernels but bn_finalize are bandwidth-bound (a few FLOP per
// byte): the ceiling aimed at is HBM bandwidth. They run on 2-D grids (x: vectors of VW
// channels, y: pixel rows; no per-element division) and move 16 bytes per thread per access
// where the channel count, offsets and pointers allow it (VW = 8 for 16-bit types, 4 for fp32;
// `<name>_v16_kernel`), else one channel per thread (`<name>_kernel`); see maxpool.cu for why
// two names. Sums are deterministic: each block reduces its rows in a fixed order into one fp32
// partial per channel, and reduce_partials adds the partials in a fixed order (no float
// atomics). The torch reference of each kernel is in inception_fast/ops/csrc_reference.py.
#pragma once
#include <initializer_list>

#include "common.cuh"

namespace ifast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRowBlocks = 2048;  // bounds the partials (and reduce_partials' serial work)
constexpr int kPartLanes = 8;        // csrc_reference.STAT_LANES

// Block shape for VW-channel vectors: x covers min(nvec, 32) vectors (a power of two), y the
// rest of the 256 threads along pixels.
inline dim3 block_for(int nvec) {
  int bx = 1;
  while (bx < nvec && bx < 32) bx *= 2;
  return dim3(bx, kThreads / bx);
}

// Rows per block of the reductions: at least 256, at most kMaxRowBlocks blocks.
inline int64_t rows_per_block(int64_t M) {
  const int64_t blocks = (M + 255) / 256;
  const int64_t nb = blocks < kMaxRowBlocks ? blocks : kMaxRowBlocks;
  return nb > 0 ? (M + nb - 1) / nb : 1;
}

// The block's two per-channel partials in a fixed order: over threadIdx.y in shared memory,
// then written (not added) to part[0 / 1][blockIdx.x][c .. c + VW).
template <int VW>
__device__ __forceinline__ void block_partials(const float (&a)[VW], const float (&b)[VW], int c,
                                               int C, float* part) {
  __shared__ float sa[kThreads * VW], sb[kThreads * VW];
  const int width = blockDim.x * VW, col = threadIdx.x * VW;
#pragma unroll
  for (int e = 0; e < VW; ++e) {
    sa[threadIdx.y * width + col + e] = a[e];
    sb[threadIdx.y * width + col + e] = b[e];
  }
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float ta[VW], tb[VW];
#pragma unroll
    for (int e = 0; e < VW; ++e) ta[e] = 0.f, tb[e] = 0.f;
    for (int r = 0; r < (int)blockDim.y; ++r) {
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        ta[e] += sa[r * width + col + e];
        tb[e] += sb[r * width + col + e];
      }
    }
    const int64_t rows = gridDim.x;
#pragma unroll
    for (int e = 0; e < VW; ++e) {
      part[(int64_t)blockIdx.x * C + c + e] = ta[e];
      part[(rows + blockIdx.x) * C + c + e] = tb[e];
    }
  }
}

// Shape of the elementwise kernels: x = channel vectors, y = pixel rows (`unroll` per thread).
inline LaunchShape elementwise_shape(int nvec, int64_t M, int unroll) {
  const dim3 block = block_for(nvec);
  const int64_t per = (int64_t)block.y * unroll;
  const int64_t gy = (M + per - 1) / per;
  return LaunchShape{dim3((nvec + block.x - 1) / block.x,
                          (unsigned)(gy < 65535 ? (gy > 0 ? gy : 1) : 65535)),
                     block};
}

// 16-byte vectors when every channel base is a multiple of VW elements and 16-byte aligned.
template <typename T>
inline bool vec_ok(int C, std::initializer_list<int> counts,
                   std::initializer_list<const void*> ptrs) {
  constexpr int V = 16 / sizeof(T);
  if (C % V) return false;
  for (int n : counts)
    if (n % V) return false;
  for (const void* p : ptrs)
    if (!aligned_to(p, 16)) return false;
  return true;
}

// This thread's channel vector and the block's rows [m0, m1) of a per-channel reduction
// (blockIdx.x: row block of rpb rows, blockIdx.y: channel block).
struct ReduceRows {
  int c;
  int64_t m0, m1;
};
template <int VW>
__device__ __forceinline__ ReduceRows reduce_rows(int64_t M, int64_t rpb) {
  const int64_t m0 = (int64_t)blockIdx.x * rpb;
  return ReduceRows{(int)((blockIdx.y * blockDim.x + threadIdx.x) * VW), m0, min(m0 + rpb, M)};
}

// 2-D shape of a reduction: x = row blocks, y = channel blocks.
inline LaunchShape reduce_shape(int nvec, int64_t rows) {
  const dim3 block = block_for(nvec);
  return LaunchShape{dim3((unsigned)rows, (nvec + block.x - 1) / block.x), block};
}

}  // namespace
}  // namespace ifast
