// Host-side launchers of the kernels in csrc/*.cu. Plain C++ (no torch headers) so that the .cu
// files compile quickly with nvcc alone; bindings.cpp checks tensors and calls these.
// Every tensor is NHWC (torch channels_last), dense unless a channel stride/offset is given.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace ifast {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Where a conv kernel's epilogue puts its result: channels [out_off, out_off + Co) of an NHWC
// tensor with out_c channels. With scale/shift set it stores relu(acc * scale + shift) (eval BN
// folded in); with sum/sumsq set it adds the per-channel sum and sum of squares of the raw
// accumulator (training BN statistics; fp64 accumulators zeroed by the caller).
// Deterministic statistics (no float atomics): each block writes its fp32 partials into `part`
// ([2][row_blocks][Co]: sums, then sums of squares; row_blocks from the kernel's *_row_blocks)
// and the launcher then adds them in a fixed order (launch_reduce_partials) into sum / sumsq.
struct Epilogue {
  void* out = nullptr;
  int out_c = 0;
  int out_off = 0;
  double* sum = nullptr;
  double* sumsq = nullptr;
  float* part = nullptr;
  const float* scale = nullptr;
  const float* shift = nullptr;
};

// sum[c] += fixed-order sum of part[0][r][c] over r, sumsq[c] likewise from part[1] (part:
// [2][rows][C] fp32). Order: lane l of kPartLanes sums rows l, l + kPartLanes, ... in fp64, then
// lanes 0.. in order (inception_fast/ops/csrc_reference.py partials_sum, bit for bit).
cudaError_t launch_reduce_partials(const float* part, int64_t rows, int C, double* sum,
                                   double* sumsq, cudaStream_t stream);

// 1xn (vertical=false, taps along W) or nx1 (vertical=true, taps along H) conv, stride 1,
// zero padding `pad` along the tap axis only, 2 <= taps <= asym_conv_max_taps(). w_packed is
// [taps][Ci][Co].
cudaError_t launch_asym_conv(DType dt, const void* x, const void* w_packed, int N, int H, int W,
                             int Ci, int Co, int taps, int pad, bool vertical, Epilogue ep,
                             cudaStream_t stream);
// Row blocks of the asymmetric conv's grid (the `part` rows of its epilogue).
int64_t asym_conv_row_blocks(int N, int H, int W, int taps, int pad, bool vertical);
// Largest padded line (L + 2 * pad) one block of the asymmetric conv holds.
int asym_conv_max_padded_line();
int asym_conv_max_taps();

// Grid reduction: 3x3 / stride 2 / no padding conv (w_packed [9][Ci][Co], may be null: pool
// only) and 3x3 / stride 2 max-pool of the same input (pool may be null: conv only). The pool
// writes channels [pool_off, pool_off + Ci) of an NHWC tensor with pool_c channels and the
// winning tap (0..8, row-major in the window) per output element into argmax (NHWC, Ci ch).
// The conv path needs fp16/bf16 (tensor cores); the pool alone takes fp32 too.
int64_t grid_reduce_row_blocks(int N, int H, int W);
cudaError_t launch_grid_reduce(DType dt, const void* x, const void* w_packed, int N, int H, int W,
                               int Ci, int Co, Epilogue conv_ep, void* pool, int pool_c,
                               int pool_off, uint8_t* argmax, cudaStream_t stream);
// The 3x3 / stride 2 max-pool alone (grid_reduce's pool-only path; maxpool.cu).
cudaError_t launch_maxpool3s2(DType dt, const void* x, int N, int H, int W, int C, void* pool,
                              int pool_c, int pool_off, uint8_t* argmax, cudaStream_t stream);
// Max-pool 3x3/2 backward: dx[n,h,w,c] (+)= sum of g over the windows whose argmax is (h,w).
// g is channels [g_off, g_off + C) of an NHWC tensor with g_c channels; dx is [N,H,W,C].
cudaError_t launch_maxpool_bwd(DType dt, const void* g, int g_c, int g_off, const uint8_t* argmax,
                               void* dx, int N, int H, int W, int C, bool accumulate,
                               cudaStream_t stream);

// BatchNorm (training) pieces. y is [M, C] (M = N*H*W pixels). The two reductions take a
// [2][bn_row_blocks(M)][C] fp32 partials buffer (see Epilogue::part).
int64_t bn_row_blocks(int64_t M);
cudaError_t launch_bn_stats(DType dt, const void* y, int64_t M, int C, double* sum, double* sumsq,
                            float* part, cudaStream_t stream);
// out5 = [mean, biased var, invstd, scale = gamma*invstd, shift = beta - mean*scale], 5 x C fp32.
cudaError_t launch_bn_finalize(const double* sum, const double* sumsq, int C, int64_t count,
                               double eps, const float* gamma, const float* beta, float* out5,
                               cudaStream_t stream);
// out[:, out_off + c] = relu(y[:, c] * scale[c] + shift[c]).
cudaError_t launch_bn_apply_relu(DType dt, const void* y, int64_t M, int C, const float* scale,
                                 const float* shift, void* out, int out_c, int out_off,
                                 cudaStream_t stream);
// With gm = g * (y*scale + shift > 0) and xhat = (y - mean) * invstd:
// sum_g[c] += sum gm, sum_gx[c] += sum gm * xhat.
cudaError_t launch_bn_relu_bwd_reduce(DType dt, const void* g, int g_c, int g_off, const void* y,
                                      int64_t M, int C, const float* scale, const float* shift,
                                      const float* mean, const float* invstd, double* sum_g,
                                      double* sum_gx, float* part, cudaStream_t stream);
// dy = scale * (gm - [training] (sum_g + xhat * sum_gx) / count).
cudaError_t launch_bn_relu_bwd_apply(DType dt, const void* g, int g_c, int g_off, const void* y,
                                     int64_t M, int C, const float* scale, const float* shift,
                                     const float* mean, const float* invstd, const double* sum_g,
                                     const double* sum_gx, int64_t count, bool training, void* dy,
                                     cudaStream_t stream);

}  // namespace ifast
