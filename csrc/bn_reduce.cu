// BatchNorm (training) reductions on NHWC data viewed as [M pixels, C channels] (bn_common.cuh
// has the conventions: 2-D grids, 16-byte vectors, deterministic partials):
//   bn_stats            per-channel sum / sum of squares (standalone; the conv kernels fuse it)
//   bn_relu_bwd_reduce  the two per-channel sums of the fused ReLU-mask + BN backward
//   reduce_partials     the fixed-order second stage of every per-channel sum in csrc/
//   bn_finalize         mean, biased var, invstd and the folded scale / shift per channel
#include "bn_common.cuh"

namespace ifast {
namespace {

/// Per-channel sum and sum of squares of y [M, C] into per-block partials. Per element: one
/// read of 2 (or 4) bytes, 3 FLOP; ceiling: HBM bandwidth.
template <typename T, int VW>
__device__ __forceinline__ void bn_stats_body(const T* __restrict__ y, int64_t M, int C,
                                              int64_t rpb, float* __restrict__ part) {
  const ReduceRows rr = reduce_rows<VW>(M, rpb);
  float s[VW] = {}, ss[VW] = {};
  if (rr.c < C) {
    for (int64_t m = rr.m0 + threadIdx.y; m < rr.m1; m += blockDim.y) {
      float v[VW];
      load_vals<T, VW>(y + m * C + rr.c, v);
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        s[e] += v[e];
        ss[e] += v[e] * v[e];
      }
    }
  }
  block_partials<VW>(s, ss, rr.c, C, part);
}

IFAST_VEC_ENTRY_POINTS(bn_stats, kThreads,
    (const T* __restrict__ y, int64_t M, int C, int64_t rpb, float* __restrict__ part),
    (y, M, C, rpb, part))

/// Backward reductions of ReLU(BN(y)) into per-block partials: sum of the masked gradient and
/// of gradient * xhat. Per element: y and g read once (2 x 2 bytes for 16-bit types), ~6 FLOP;
/// ceiling: HBM bandwidth.
template <typename T, int VW>
__device__ __forceinline__ void bn_relu_bwd_reduce_body(const T* __restrict__ g, int g_c, int g_off,
                                                        const T* __restrict__ y, int64_t M, int C,
                                                        int64_t rpb, const float* scale,
                                                        const float* shift, const float* mean,
                                                        const float* invstd,
                                                        float* __restrict__ part) {
  const ReduceRows rr = reduce_rows<VW>(M, rpb);
  const int c = rr.c;
  float s[VW] = {}, sx[VW] = {};
  if (c < C) {
    float sc[VW], sh[VW], mu[VW], is[VW];
#pragma unroll
    for (int e = 0; e < VW; ++e)
      sc[e] = scale[c + e], sh[e] = shift[c + e], mu[e] = mean[c + e], is[e] = invstd[c + e];
    for (int64_t m = rr.m0 + threadIdx.y; m < rr.m1; m += blockDim.y) {
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

IFAST_VEC_ENTRY_POINTS(bn_relu_bwd_reduce, kThreads,
    (const T* __restrict__ g, int g_c, int g_off, const T* __restrict__ y, int64_t M, int C,
     int64_t rpb, const float* scale, const float* shift, const float* mean, const float* invstd,
     float* __restrict__ part),
    (g, g_c, g_off, y, M, C, rpb, scale, shift, mean, invstd, part))

/// sum[c] += fixed-order sum over the row blocks of part[0][.][c] (sumsq likewise from part[1]):
/// lane l sums rows l, l + kPartLanes, ... in fp64, then lane 0 adds the lanes in order.
/// Per channel: 2 * rows fp32 reads (a few KB per layer), coalesced over 32 channels, ~2 fp64
/// FLOP each; latency-bound (one small launch), the ceiling is launch latency, not a rate.
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
/// affine (scale = gamma * invstd, shift = beta - mean * scale). Per channel: 24 bytes read,
/// 20 written, ~10 fp64 FLOP and one fp64 sqrt / division: C <= 2048 threads, latency-bound.
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
    launch_vec_or_one<16 / sizeof(T)>(
        vec_ok<T>(C, {}, {y}), C, [&](int nvec) { return reduce_shape(nvec, rows); },
        bn_stats_v16_kernel<T>, bn_stats_kernel<T>, stream, static_cast<const T*>(y), M, C, rpb,
        part);
  });
  cudaError_t e = launch_status();
  if (e == cudaSuccess) e = launch_reduce_partials(part, rows, C, sum, sumsq, stream);
  return e;
}

cudaError_t launch_bn_relu_bwd_reduce(DType dt, const void* g, int g_c, int g_off, const void* y,
                                      int64_t M, int C, const float* scale, const float* shift,
                                      const float* mean, const float* invstd, double* sum_g,
                                      double* sum_gx, float* part, cudaStream_t stream) {
  if (M == 0 || C == 0) return cudaSuccess;
  const int64_t rpb = rows_per_block(M), rows = bn_row_blocks(M);
  IFAST_DISPATCH_ALL(dt, {
    launch_vec_or_one<16 / sizeof(T)>(
        vec_ok<T>(C, {g_c, g_off}, {g, y}), C, [&](int nvec) { return reduce_shape(nvec, rows); },
        bn_relu_bwd_reduce_v16_kernel<T>, bn_relu_bwd_reduce_kernel<T>, stream,
        static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C, rpb, scale, shift,
        mean, invstd, part);
  });
  cudaError_t e = launch_status();
  if (e == cudaSuccess) e = launch_reduce_partials(part, rows, C, sum_g, sum_gx, stream);
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

}  // namespace ifast
