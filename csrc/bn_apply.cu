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
/// write (4 B for 16-bit types), 2 FLOP: ceiling HBM bandwidth (~3.3 TB/s on an H100 SXM);
/// scale / shift loaded once per thread, kUnroll 16-byte loads in flight.
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

IFAST_VEC_ENTRY_POINTS(bn_apply_relu, kThreads,
    (const T* __restrict__ y, int64_t M, int C, const float* __restrict__ scale,
     const float* __restrict__ shift, T* __restrict__ out, int out_c, int out_off),
    (y, M, C, scale, shift, out, out_c, out_off))

/// dy = scale * (gm - (sum_g + xhat * sum_gx) / count) in training, scale * gm in eval.
/// Per element: two reads, one write (6 B for 16-bit types), ~8 FLOP: ceiling HBM bandwidth;
/// the per-channel terms loaded once per thread, kUnrollBwd rows of two 16-byte loads in flight.
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

IFAST_VEC_ENTRY_POINTS(bn_relu_bwd_apply, kThreads,
    (const T* __restrict__ g, int g_c, int g_off, const T* __restrict__ y, int64_t M, int C,
     const float* scale, const float* shift, const float* mean, const float* invstd,
     const double* sum_g, const double* sum_gx, double inv_count, bool training,
     T* __restrict__ dy),
    (g, g_c, g_off, y, M, C, scale, shift, mean, invstd, sum_g, sum_gx, inv_count, training, dy))

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
