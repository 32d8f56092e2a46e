// BatchNorm + ReLU elementwise kernels on NHWC data viewed as [M pixels, C channels]
// (bn_common.cuh has the conventions: 2-D grids, 16-byte vectors):
//   bn_apply_relu      relu(y * scale + shift) into a channel slice of a wider NHWC tensor
//   bn_relu_bwd_apply  dy of the fused ReLU-mask + BN backward (after bn_reduce.cu's sums)
#include "bn_common.cuh"

namespace ifast {
namespace {

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

}  // namespace

cudaError_t launch_bn_apply_relu(DType dt, const void* y, int64_t M, int C, const float* scale,
                                 const float* shift, void* out, int out_c, int out_off,
                                 cudaStream_t stream) {
  if (M * C == 0) return cudaSuccess;
  IFAST_DISPATCH_ALL(dt, {
    launch_vec_or_one<16 / sizeof(T)>(
        vec_ok<T>(C, {out_c, out_off}, {y, out}), C,
        [&](int nvec) { return elementwise_shape(nvec, M, kUnroll); },
        bn_apply_relu_v16_kernel<T>, bn_apply_relu_kernel<T>, stream, static_cast<const T*>(y),
        M, C, scale, shift, static_cast<T*>(out), out_c, out_off);
  });
  return launch_status();
}

cudaError_t launch_bn_relu_bwd_apply(DType dt, const void* g, int g_c, int g_off, const void* y,
                                     int64_t M, int C, const float* scale, const float* shift,
                                     const float* mean, const float* invstd, const double* sum_g,
                                     const double* sum_gx, int64_t count, bool training, void* dy,
                                     cudaStream_t stream) {
  if (M * C == 0) return cudaSuccess;
  const double inv_count = count > 0 ? 1.0 / (double)count : 0.0;
  IFAST_DISPATCH_ALL(dt, {
    launch_vec_or_one<16 / sizeof(T)>(
        vec_ok<T>(C, {g_c, g_off}, {g, y, dy}), C,
        [&](int nvec) { return elementwise_shape(nvec, M, kUnrollBwd); },
        bn_relu_bwd_apply_v16_kernel<T>, bn_relu_bwd_apply_kernel<T>, stream,
        static_cast<const T*>(g), g_c, g_off, static_cast<const T*>(y), M, C, scale, shift, mean,
        invstd, sum_g, sum_gx, inv_count, training, static_cast<T*>(dy));
  });
  return launch_status();
}

}  // namespace ifast
