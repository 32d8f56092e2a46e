// BatchNorm (training) + ReLU kernels on NHWC data, viewed as [M pixels, C channels]:
//   bn_stats          per-channel sum / sum of squares (standalone; the conv kernels fuse it)
//   bn_finalize       mean, biased var, invstd and the folded scale / shift per channel
//   bn_apply_relu     relu(y * scale + shift) into a channel slice of a wider NHWC tensor
//   bn_relu_bwd_*     the fused ReLU-mask + BN backward: two per-channel reductions, then dy
// The torch reference of each is in inception_fast/ops/csrc_reference.py.
#include "common.cuh"

namespace ifast {
namespace {

constexpr int kTx = 32;          // channels per block (one warp wide, coalesced along C)
constexpr int kTy = 8;           // pixel rows in flight per block
constexpr int kRowsPerBlock = 256;

// Block-reduce two per-thread partials over threadIdx.y and add them to fp64 accumulators.
__device__ __forceinline__ void reduce_add2(float a, float b, int c, int C, double* out_a,
                                            double* out_b) {
  __shared__ float sa[kTy][kTx];
  __shared__ float sb[kTy][kTx];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double ta = 0.0, tb = 0.0;
#pragma unroll
    for (int i = 0; i < kTy; ++i) {
      ta += sa[i][threadIdx.x];
      tb += sb[i][threadIdx.x];
    }
    atomicAdd(out_a + c, ta);
    atomicAdd(out_b + c, tb);
  }
}

/// Per-channel sum and sum of squares of y [M, C], added to fp64 sum / sumsq.
template <typename T>
__global__ void bn_stats_kernel(const T* __restrict__ y, int64_t M, int C, double* sum,
                                double* sumsq) {
  const int c = blockIdx.y * kTx + threadIdx.x;
  const int64_t m0 = (int64_t)blockIdx.x * kRowsPerBlock;
  const int64_t m1 = min(m0 + kRowsPerBlock, M);
  float s = 0.f, ss = 0.f;
  if (c < C) {
    for (int64_t m = m0 + threadIdx.y; m < m1; m += kTy) {
      const float v = to_f(y[m * C + c]);
      s += v;
      ss += v * v;
    }
  }
  reduce_add2(s, ss, c, C, sum, sumsq);
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

/// out[m, out_off + c] = relu(y[m, c] * scale[c] + shift[c]); grid-stride over M * C.
template <typename T>
__global__ void bn_apply_relu_kernel(const T* __restrict__ y, int64_t M, int C,
                                     const float* __restrict__ scale,
                                     const float* __restrict__ shift, T* __restrict__ out,
                                     int out_c, int out_off) {
  const int64_t total = M * C;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / C;
    const int c = (int)(i - m * C);
    out[m * out_c + out_off + c] = from_f<T>(bn_relu(to_f(y[i]), scale[c], shift[c]));
  }
}

/// Backward reductions of ReLU(BN(y)): sum of the masked gradient and of gradient * xhat.
template <typename T>
__global__ void bn_relu_bwd_reduce_kernel(const T* __restrict__ g, int g_c, int g_off,
                                          const T* __restrict__ y, int64_t M, int C,
                                          const float* scale, const float* shift,
                                          const float* mean, const float* invstd, double* sum_g,
                                          double* sum_gx) {
  const int c = blockIdx.y * kTx + threadIdx.x;
  const int64_t m0 = (int64_t)blockIdx.x * kRowsPerBlock;
  const int64_t m1 = min(m0 + kRowsPerBlock, M);
  float s = 0.f, sx = 0.f;
  if (c < C) {
    const float sc = scale[c], sh = shift[c], mu = mean[c], is = invstd[c];
    for (int64_t m = m0 + threadIdx.y; m < m1; m += kTy) {
      const float yv = to_f(y[m * C + c]);
      if (relu_passes(yv, sc, sh)) {
        const float gv = to_f(g[m * g_c + g_off + c]);
        s += gv;
        sx += gv * (yv - mu) * is;
      }
    }
  }
  reduce_add2(s, sx, c, C, sum_g, sum_gx);
}

/// dy = scale * (gm - (sum_g + xhat * sum_gx) / count) in training, scale * gm in eval.
template <typename T>
__global__ void bn_relu_bwd_apply_kernel(const T* __restrict__ g, int g_c, int g_off,
                                         const T* __restrict__ y, int64_t M, int C,
                                         const float* scale, const float* shift,
                                         const float* mean, const float* invstd,
                                         const double* sum_g, const double* sum_gx, double inv_count,
                                         bool training, T* __restrict__ dy) {
  const int64_t total = M * C;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / C;
    const int c = (int)(i - m * C);
    const float yv = to_f(y[i]);
    const float sc = scale[c];
    float gm = relu_passes(yv, sc, shift[c]) ? to_f(g[m * g_c + g_off + c]) : 0.f;
    if (training) {
      const float xhat = (yv - mean[c]) * invstd[c];
      gm -= (float)(sum_g[c] * inv_count) + xhat * (float)(sum_gx[c] * inv_count);
    }
    dy[i] = from_f<T>(sc * gm);
  }
}

int elementwise_blocks(int64_t total) {
  const int64_t b = (total + 255) / 256;
  return (int)(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

}  // namespace

cudaError_t launch_bn_stats(DType dt, const void* y, int64_t M, int C, double* sum, double* sumsq,
                            cudaStream_t stream) {
  if (M == 0 || C == 0) return cudaSuccess;
  dim3 grid((unsigned)((M + kRowsPerBlock - 1) / kRowsPerBlock), (C + kTx - 1) / kTx);
  dim3 block(kTx, kTy);
  IFAST_DISPATCH_ALL(dt, bn_stats_kernel<T><<<grid, block, 0, stream>>>(
                             static_cast<const T*>(y), M, C, sum, sumsq));
  return launch_status();
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
  IFAST_DISPATCH_ALL(dt, bn_apply_relu_kernel<T><<<elementwise_blocks(M * C), 256, 0, stream>>>(
                             static_cast<const T*>(y), M, C, scale, shift, static_cast<T*>(out),
                             out_c, out_off));
  return launch_status();
}

cudaError_t launch_bn_relu_bwd_reduce(DType dt, const void* g, int g_c, int g_off, const void* y,
                                      int64_t M, int C, const float* scale, const float* shift,
                                      const float* mean, const float* invstd, double* sum_g,
                                      double* sum_gx, cudaStream_t stream) {
  if (M == 0 || C == 0) return cudaSuccess;
  dim3 grid((unsigned)((M + kRowsPerBlock - 1) / kRowsPerBlock), (C + kTx - 1) / kTx);
  dim3 block(kTx, kTy);
  IFAST_DISPATCH_ALL(dt, bn_relu_bwd_reduce_kernel<T><<<grid, block, 0, stream>>>(
                             static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C,
                             scale, shift, mean, invstd, sum_g, sum_gx));
  return launch_status();
}

cudaError_t launch_bn_relu_bwd_apply(DType dt, const void* g, int g_c, int g_off, const void* y,
                                     int64_t M, int C, const float* scale, const float* shift,
                                     const float* mean, const float* invstd, const double* sum_g,
                                     const double* sum_gx, int64_t count, bool training, void* dy,
                                     cudaStream_t stream) {
  if (M * C == 0) return cudaSuccess;
  const double inv_count = count > 0 ? 1.0 / (double)count : 0.0;
  IFAST_DISPATCH_ALL(dt, bn_relu_bwd_apply_kernel<T><<<elementwise_blocks(M * C), 256, 0, stream>>>(
                             static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C,
                             scale, shift, mean, invstd, sum_g, sum_gx, inv_count, training,
                             static_cast<T*>(dy)));
  return launch_status();
}

}  // namespace ifast
