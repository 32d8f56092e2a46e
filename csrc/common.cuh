// Small device helpers shared by the kernels: fp32 <-> storage type conversions, 16-byte
// vector moves, and the launch-error check.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launchers.h"

namespace ifast {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T> __device__ __forceinline__ T zero_val() { return from_f<T>(0.f); }

// BN + ReLU of one value; the forward apply and the backward mask must use the same rounding,
// hence one explicit fused multiply-add in both.
__device__ __forceinline__ float bn_relu(float y, float scale, float shift) {
  return fmaxf(__fmaf_rn(y, scale, shift), 0.f);
}
__device__ __forceinline__ bool relu_passes(float y, float scale, float shift) {
  return __fmaf_rn(y, scale, shift) > 0.f;
}

// Torch's max-pool update rule (NaN wins, first maximum kept on ties).
__device__ __forceinline__ bool pool_takes(float v, float best) { return v > best || isnan(v); }

inline cudaError_t launch_status() { return cudaGetLastError(); }

// Dispatch a DType to a storage type T for `body`, e.g. IFAST_DISPATCH(dt, launch<T>(...)).
#define IFAST_DISPATCH_ALL(dt, ...)                                   \
  switch (dt) {                                                       \
    case DType::F32: { using T = float; __VA_ARGS__; break; }         \
    case DType::F16: { using T = __half; __VA_ARGS__; break; }        \
    case DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
  }

}  // namespace ifast
