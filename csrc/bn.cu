// BatchNorm (training) + ReLU kernels on NHWC data, viewed as [M pixels, C channels]:
//   bn_stats          per-channel sum / sum of squares (standalone; the conv kernels fuse it)
//   reduce_partials   the fixed-order second stage of every per-channel sum in csrc/
//   bn_finalize       mean, biased var, invstd and the folded scale / shift per channel
//   bn_apply_relu     relu(y * scale + shift) into a channel slice of a wider NHWC tensor
//   bn_relu_bwd_*     the fused ReLU-mask + BN backward: two per-channel reductions, then dy
// All but bn_finalize are bandwidth-bound (a few FLOP per byte): the ceiling aimed at is HBM
// bandwidth. They run on 2-D grids (x: vectors of VW channels, y: pixel rows; no per-element
// division) and move 16 bytes per thread per access where the channel count, offsets and
// pointers allow it (VW = 8 for 16-bit types, 4 for fp32; `<name>_v16_kernel`), else one
// channel per thread (`<name>_kernel`); see grid_reduction.cu for why two names.
// Sums are deterministic: each block reduces its rows in a fixed order into one fp32 partial
// per channel, and reduce_partials adds the partials in a fixed order (no float atomics).
// The torch reference of each is in inception_fast/ops/csrc_reference.py.
#include <initializer_list>

#include "common.cuh"

namespace ifast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRowBlocks = 2048;  // bounds the partials (and reduce_partials' serial work)
constexpr int kPartLanes = 8;        // csrc_reference.STAT_LANES

// Block shape for VW-channel vectors: x covers min(nvec, 32) vectors (a power of two), y the
// rest of the 256 threads along pixels.
dim3 block_for(int nvec) {
  int bx = 1;
  while (bx < nvec && bx < 32) bx *= 2;
  return dim3(bx, kThreads / bx);
}

// Rows per block of the reductions: at least 256, at most kMaxRowBlocks blocks.
int64_t rows_per_block(int64_t M) {
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

/// Per-channel sum and sum of squares of y [M, C] into per-block partials.
/// Reads 2 (or 4) bytes per element once, 3 FLOP per element.
template <typename T, int VW>
__device__ __forceinline__ void bn_stats_body(const T* __restrict__ y, int64_t M, int C,
                                              int64_t rpb, float* __restrict__ part) {
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * VW;
  const int64_t m0 = (int64_t)blockIdx.x * rpb;
  const int64_t m1 = min(m0 + rpb, M);
  float s[VW], ss[VW];
#pragma unroll
  for (int e = 0; e < VW; ++e) s[e] = 0.f, ss[e] = 0.f;
  if (c < C) {
    for (int64_t m = m0 + threadIdx.y; m < m1; m += blockDim.y) {
      float v[VW];
      load_vals<T, VW>(y + m * C + c, v);
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        s[e] += v[e];
        ss[e] += v[e] * v[e];
      }
    }
  }
  block_partials<VW>(s, ss, c, C, part);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_stats_kernel(const T* __restrict__ y, int64_t M, int C, int64_t rpb, float* __restrict__ part) {
  bn_stats_body<T, 1>(y, M, C, rpb, part);
}
template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_stats_v16_kernel(const T* __restrict__ y, int64_t M, int C, int64_t rpb,
                    float* __restrict__ part) {
  bn_stats_body<T, 16 / sizeof(T)>(y, M, C, rpb, part);
}

/// sum[c] += fixed-order sum over the row blocks of part[0][.][c] (sumsq likewise from part[1]):
/// lane l sums rows l, l + kPartLanes, ... in fp64, then lane 0 adds the lanes in order.
__global__ void __launch_bounds__(32 * kPartLanes)
reduce_partials_kernel(const float* __restrict__ part, int64_t rows, int C, double* sum,
                       double* sumsq) {
  __shared__ double sa[kPartLanes][32], sb[kPartLanes][32];
  const int c = blockIdx.x * 32 + threadIdx.x;
  double a = 0.0, b = 0.0;
  if (c < C) {
    for (int64_t r = threadIdx.y; r < rows; r += kPartLanes) {
      a += (double)part[r * C + c];
      b += (double)part[(rows + r) * C + c];
    }
  }
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double ta = 0.0, tb = 0.0;
#pragma unroll
    for (int l = 0; l < kPartLanes; ++l) {
      ta += sa[l][threadIdx.x];
      tb += sb[l][threadIdx.x];
    }
    sum[c] += ta;
    sumsq[c] += tb;
  }
}

/// One thread per channel: batch mean / biased variance from the fp64 sums, and the folded
/// affine (scale = gamma * invstd, shift = beta - mean * scale).
__global__ void bn_finalize_kernel(const double* sum, const double* sumsq, int C, int64_t count,
                                   double eps, const float* gamma, const float* beta,
                                   float* out5) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double mean = sum[c] / (double)count;
  const double var = fmax(sumsq[c] / (double)count - mean * mean, 0.0);
  const double invstd = 1.0 / sqrt(var + eps);
  const double scale = (gamma ? (double)gamma[c] : 1.0) * invstd;
  const double shift = (beta ? (double)beta[c] : 0.0) - mean * scale;
  out5[c] = (float)mean;
  out5[C + c] = (float)var;
  out5[2 * C + c] = (float)invstd;
  out5[3 * C + c] = (float)scale;
  out5[4 * C + c] = (float)shift;
}

constexpr int kUnroll = 4;  // rows in flight per thread in bn_apply_relu (one vector each)
constexpr int kUnrollBwd = 2;  // in bn_relu_bwd_apply (two vectors each; 4 would need ~145 regs)

/// out[m, out_off + c] = relu(y[m, c] * scale[c] + shift[c]). Per element: one read, one
/// write, 2 FLOP; scale / shift loaded once per thread, kUnroll vector loads in flight.
template <typename T, int VW>
__device__ __forceinline__ void bn_apply_relu_body(const T* __restrict__ y, int64_t M, int C,
                                                   const float* __restrict__ scale,
                                                   const float* __restrict__ shift,
                                                   T* __restrict__ out, int out_c, int out_off) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VW;
  if (c >= C) return;
  float sc[VW], sh[VW];
#pragma unroll
  for (int e = 0; e < VW; ++e) sc[e] = scale[c + e], sh[e] = shift[c + e];
  const int64_t step = (int64_t)gridDim.y * blockDim.y;
  const int64_t first = (int64_t)blockIdx.y * blockDim.y + threadIdx.y;
  for (int64_t m0 = first; m0 < M; m0 += step * kUnroll) {
    float v[kUnroll][VW];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k)
      if (m0 + k * step < M) load_vals<T, VW>(y + (m0 + k * step) * C + c, v[k]);
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t m = m0 + k * step;
      if (m >= M) break;
#pragma unroll
      for (int e = 0; e < VW; ++e) v[k][e] = bn_relu(v[k][e], sc[e], sh[e]);
      store_vals<T, VW>(out + m * out_c + out_off + c, v[k]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_apply_relu_kernel(const T* __restrict__ y, int64_t M, int C, const float* __restrict__ scale,
                     const float* __restrict__ shift, T* __restrict__ out, int out_c, int out_off) {
  bn_apply_relu_body<T, 1>(y, M, C, scale, shift, out, out_c, out_off);
}
template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_apply_relu_v16_kernel(const T* __restrict__ y, int64_t M, int C, const float* __restrict__ scale,
                         const float* __restrict__ shift, T* __restrict__ out, int out_c,
                         int out_off) {
  bn_apply_relu_body<T, 16 / sizeof(T)>(y, M, C, scale, shift, out, out_c, out_off);
}

/// Backward reductions of ReLU(BN(y)) into per-block partials: sum of the masked gradient and
/// of gradient * xhat. Reads y and g once (4 bytes per 16-bit element pair).
template <typename T, int VW>
__device__ __forceinline__ void bn_relu_bwd_reduce_body(const T* __restrict__ g, int g_c, int g_off,
                                                        const T* __restrict__ y, int64_t M, int C,
                                                        int64_t rpb, const float* scale,
                                                        const float* shift, const float* mean,
                                                        const float* invstd,
                                                        float* __restrict__ part) {
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * VW;
  const int64_t m0 = (int64_t)blockIdx.x * rpb;
  const int64_t m1 = min(m0 + rpb, M);
  float s[VW], sx[VW];
#pragma unroll
  for (int e = 0; e < VW; ++e) s[e] = 0.f, sx[e] = 0.f;
  if (c < C) {
    float sc[VW], sh[VW], mu[VW], is[VW];
#pragma unroll
    for (int e = 0; e < VW; ++e)
      sc[e] = scale[c + e], sh[e] = shift[c + e], mu[e] = mean[c + e], is[e] = invstd[c + e];
    for (int64_t m = m0 + threadIdx.y; m < m1; m += blockDim.y) {
      float yv[VW], gv[VW];
      load_vals<T, VW>(y + m * C + c, yv);
      load_vals<T, VW>(g + m * g_c + g_off + c, gv);
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        if (relu_passes(yv[e], sc[e], sh[e])) {
          s[e] += gv[e];
          sx[e] += gv[e] * (yv[e] - mu[e]) * is[e];
        }
      }
    }
  }
  block_partials<VW>(s, sx, c, C, part);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_relu_bwd_reduce_kernel(const T* __restrict__ g, int g_c, int g_off, const T* __restrict__ y,
                          int64_t M, int C, int64_t rpb, const float* scale, const float* shift,
                          const float* mean, const float* invstd, float* __restrict__ part) {
  bn_relu_bwd_reduce_body<T, 1>(g, g_c, g_off, y, M, C, rpb, scale, shift, mean, invstd, part);
}
template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_relu_bwd_reduce_v16_kernel(const T* __restrict__ g, int g_c, int g_off, const T* __restrict__ y,
                              int64_t M, int C, int64_t rpb, const float* scale, const float* shift,
                              const float* mean, const float* invstd, float* __restrict__ part) {
  bn_relu_bwd_reduce_body<T, 16 / sizeof(T)>(g, g_c, g_off, y, M, C, rpb, scale, shift, mean,
                                             invstd, part);
}

/// dy = scale * (gm - (sum_g + xhat * sum_gx) / count) in training, scale * gm in eval.
/// Per element: two reads, one write; the per-channel terms loaded once per thread.
template <typename T, int VW>
__device__ __forceinline__ void bn_relu_bwd_apply_body(const T* __restrict__ g, int g_c, int g_off,
                                                       const T* __restrict__ y, int64_t M, int C,
                                                       const float* scale, const float* shift,
                                                       const float* mean, const float* invstd,
                                                       const double* sum_g, const double* sum_gx,
                                                       double inv_count, bool training,
                                                       T* __restrict__ dy) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VW;
  if (c >= C) return;
  float sc[VW], sh[VW], mu[VW], is[VW], mg[VW], mgx[VW];
#pragma unroll
  for (int e = 0; e < VW; ++e) {
    sc[e] = scale[c + e], sh[e] = shift[c + e], mu[e] = mean[c + e], is[e] = invstd[c + e];
    mg[e] = training ? (float)(sum_g[c + e] * inv_count) : 0.f;
    mgx[e] = training ? (float)(sum_gx[c + e] * inv_count) : 0.f;
  }
  const int64_t step = (int64_t)gridDim.y * blockDim.y;
  const int64_t first = (int64_t)blockIdx.y * blockDim.y + threadIdx.y;
  for (int64_t m0 = first; m0 < M; m0 += step * kUnrollBwd) {
    float yv[kUnrollBwd][VW], gv[kUnrollBwd][VW];
#pragma unroll
    for (int k = 0; k < kUnrollBwd; ++k) {
      const int64_t m = m0 + k * step;
      if (m < M) {
        load_vals<T, VW>(y + m * C + c, yv[k]);
        load_vals<T, VW>(g + m * g_c + g_off + c, gv[k]);
      }
    }
#pragma unroll
    for (int k = 0; k < kUnrollBwd; ++k) {
      const int64_t m = m0 + k * step;
      if (m >= M) break;
      float d[VW];
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        float gm = relu_passes(yv[k][e], sc[e], sh[e]) ? gv[k][e] : 0.f;
        if (training) gm -= mg[e] + (yv[k][e] - mu[e]) * is[e] * mgx[e];
        d[e] = sc[e] * gm;
      }
      store_vals<T, VW>(dy + m * C + c, d);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_relu_bwd_apply_kernel(const T* __restrict__ g, int g_c, int g_off, const T* __restrict__ y,
                         int64_t M, int C, const float* scale, const float* shift,
                         const float* mean, const float* invstd, const double* sum_g,
                         const double* sum_gx, double inv_count, bool training,
                         T* __restrict__ dy) {
  bn_relu_bwd_apply_body<T, 1>(g, g_c, g_off, y, M, C, scale, shift, mean, invstd, sum_g, sum_gx,
                               inv_count, training, dy);
}
template <typename T>
__global__ void __launch_bounds__(kThreads)
bn_relu_bwd_apply_v16_kernel(const T* __restrict__ g, int g_c, int g_off, const T* __restrict__ y,
                             int64_t M, int C, const float* scale, const float* shift,
                             const float* mean, const float* invstd, const double* sum_g,
                             const double* sum_gx, double inv_count, bool training,
                             T* __restrict__ dy) {
  bn_relu_bwd_apply_body<T, 16 / sizeof(T)>(g, g_c, g_off, y, M, C, scale, shift, mean, invstd,
                                            sum_g, sum_gx, inv_count, training, dy);
}

// Grid of the elementwise kernels: x = channel vectors, y = pixel rows (kUnroll per thread).
dim3 elementwise_grid(dim3 block, int nvec, int64_t M, int unroll) {
  const int64_t per = (int64_t)block.y * unroll;
  const int64_t gy = (M + per - 1) / per;
  return dim3((nvec + block.x - 1) / block.x, (unsigned)(gy < 65535 ? (gy > 0 ? gy : 1) : 65535));
}

// 16-byte vectors when every channel base is a multiple of VW elements and 16-byte aligned.
template <typename T>
bool vec_ok(int C, std::initializer_list<int> counts, std::initializer_list<const void*> ptrs) {
  constexpr int V = 16 / sizeof(T);
  if (C % V) return false;
  for (int n : counts)
    if (n % V) return false;
  for (const void* p : ptrs)
    if (!aligned_to(p, 16)) return false;
  return true;
}

}  // namespace

int64_t bn_row_blocks(int64_t M) {
  if (M <= 0) return 0;
  const int64_t rpb = rows_per_block(M);
  return (M + rpb - 1) / rpb;
}

cudaError_t launch_reduce_partials(const float* part, int64_t rows, int C, double* sum,
                                   double* sumsq, cudaStream_t stream) {
  if (rows == 0 || C == 0) return cudaSuccess;
  reduce_partials_kernel<<<(C + 31) / 32, dim3(32, kPartLanes), 0, stream>>>(part, rows, C, sum,
                                                                            sumsq);
  return launch_status();
}

cudaError_t launch_bn_stats(DType dt, const void* y, int64_t M, int C, double* sum, double* sumsq,
                            float* part, cudaStream_t stream) {
  if (M == 0 || C == 0) return cudaSuccess;
  const int64_t rpb = rows_per_block(M), rows = bn_row_blocks(M);
  IFAST_DISPATCH_ALL(dt, {
    constexpr int V = 16 / sizeof(T);
    if (vec_ok<T>(C, {}, {y})) {
      const dim3 block = block_for(C / V);
      bn_stats_v16_kernel<T><<<dim3((unsigned)rows, (C / V + block.x - 1) / block.x), block, 0,
                              stream>>>(static_cast<const T*>(y), M, C, rpb, part);
    } else {
      const dim3 block = block_for(C);
      bn_stats_kernel<T><<<dim3((unsigned)rows, (C + block.x - 1) / block.x), block, 0,
                              stream>>>(static_cast<const T*>(y), M, C, rpb, part);
    }
  });
  cudaError_t e = launch_status();
  if (e == cudaSuccess) e = launch_reduce_partials(part, rows, C, sum, sumsq, stream);
  return e;
}

cudaError_t launch_bn_finalize(const double* sum, const double* sumsq, int C, int64_t count,
                               double eps, const float* gamma, const float* beta, float* out5,
                               cudaStream_t stream) {
  if (C == 0) return cudaSuccess;
  bn_finalize_kernel<<<(C + 127) / 128, 128, 0, stream>>>(sum, sumsq, C, count, eps, gamma, beta,
                                                           out5);
  return launch_status();
}

cudaError_t launch_bn_apply_relu(DType dt, const void* y, int64_t M, int C, const float* scale,
                                 const float* shift, void* out, int out_c, int out_off,
                                 cudaStream_t stream) {
  if (M * C == 0) return cudaSuccess;
  IFAST_DISPATCH_ALL(dt, {
    constexpr int V = 16 / sizeof(T);
    if (vec_ok<T>(C, {out_c, out_off}, {y, out})) {
      const dim3 block = block_for(C / V);
      const dim3 grid = elementwise_grid(block, C / V, M, kUnroll);
      bn_apply_relu_v16_kernel<T><<<grid, block, 0, stream>>>(
          static_cast<const T*>(y), M, C, scale, shift, static_cast<T*>(out), out_c, out_off);
    } else {
      const dim3 block = block_for(C);
      bn_apply_relu_kernel<T><<<elementwise_grid(block, C, M, kUnroll), block, 0, stream>>>(
          static_cast<const T*>(y), M, C, scale, shift, static_cast<T*>(out), out_c, out_off);
    }
  });
  return launch_status();
}

cudaError_t launch_bn_relu_bwd_reduce(DType dt, const void* g, int g_c, int g_off, const void* y,
                                      int64_t M, int C, const float* scale, const float* shift,
                                      const float* mean, const float* invstd, double* sum_g,
                                      double* sum_gx, float* part, cudaStream_t stream) {
  if (M == 0 || C == 0) return cudaSuccess;
  const int64_t rpb = rows_per_block(M), rows = bn_row_blocks(M);
  IFAST_DISPATCH_ALL(dt, {
    constexpr int V = 16 / sizeof(T);
    if (vec_ok<T>(C, {g_c, g_off}, {g, y})) {
      const dim3 block = block_for(C / V);
      bn_relu_bwd_reduce_v16_kernel<T><<<dim3((unsigned)rows, (C / V + block.x - 1) / block.x),
                                        block, 0, stream>>>(
          static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C, rpb, scale, shift,
          mean, invstd, part);
    } else {
      const dim3 block = block_for(C);
      bn_relu_bwd_reduce_kernel<T><<<dim3((unsigned)rows, (C + block.x - 1) / block.x), block,
                                        0, stream>>>(
          static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C, rpb, scale, shift,
          mean, invstd, part);
    }
  });
  cudaError_t e = launch_status();
  if (e == cudaSuccess) e = launch_reduce_partials(part, rows, C, sum_g, sum_gx, stream);
  return e;
}

cudaError_t launch_bn_relu_bwd_apply(DType dt, const void* g, int g_c, int g_off, const void* y,
                                     int64_t M, int C, const float* scale, const float* shift,
                                     const float* mean, const float* invstd, const double* sum_g,
                                     const double* sum_gx, int64_t count, bool training, void* dy,
                                     cudaStream_t stream) {
  if (M * C == 0) return cudaSuccess;
  const double inv_count = count > 0 ? 1.0 / (double)count : 0.0;
  IFAST_DISPATCH_ALL(dt, {
    constexpr int V = 16 / sizeof(T);
    if (vec_ok<T>(C, {g_c, g_off}, {g, y, dy})) {
      const dim3 block = block_for(C / V);
      const dim3 grid = elementwise_grid(block, C / V, M, kUnrollBwd);
      bn_relu_bwd_apply_v16_kernel<T><<<grid, block, 0, stream>>>(
          static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C, scale, shift, mean,
          invstd, sum_g, sum_gx, inv_count, training, static_cast<T*>(dy));
    } else {
      const dim3 block = block_for(C);
      const dim3 grid = elementwise_grid(block, C, M, kUnrollBwd);
      bn_relu_bwd_apply_kernel<T><<<grid, block, 0, stream>>>(
          static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C, scale, shift, mean,
          invstd, sum_g, sum_gx, inv_count, training, static_cast<T*>(dy));
    }
  });
  return launch_status();
}

}  // namespace ifast
