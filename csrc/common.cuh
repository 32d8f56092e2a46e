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

// VW consecutive elements as one global access of VW * sizeof(T) bytes (the caller checks the
// alignment): the bandwidth-bound kernels move 16 bytes per thread where the channels allow.
template <int BYTES> struct VecOf;
template <> struct VecOf<16> { using type = uint4; };
template <> struct VecOf<8> { using type = uint2; };
template <> struct VecOf<4> { using type = uint32_t; };
template <> struct VecOf<2> { using type = uint16_t; };
template <> struct VecOf<1> { using type = uint8_t; };

// (VW == 1 is a plain access: punning a scalar through another type puts it on the stack.)
template <typename T, int VW>
__device__ __forceinline__ void load_vals(const T* p, float (&v)[VW]) {
  if constexpr (VW == 1) {
    v[0] = to_f(*p);
    return;
  }
  using V = typename VecOf<VW * sizeof(T)>::type;
  const V raw = *reinterpret_cast<const V*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < VW; ++i) v[i] = to_f(e[i]);
}

template <typename T, int VW>
__device__ __forceinline__ void store_vals(T* p, const float (&v)[VW]) {
  if constexpr (VW == 1) {
    *p = from_f<T>(v[0]);
    return;
  }
  using V = typename VecOf<VW * sizeof(T)>::type;
  V raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < VW; ++i) e[i] = from_f<T>(v[i]);
  *reinterpret_cast<V*>(p) = raw;
}

// VW argmax bytes as one access of VW bytes, packed / unpacked with shifts (byte punning through
// a vector put the vector on the stack on sm_80).
template <int VW>
__device__ __forceinline__ void load_bytes(const uint8_t* p, uint8_t (&a)[VW]) {
  static_assert(VW == 1 || VW == 2 || VW == 4 || VW == 8 || VW == 16, "byte vector width");
  uint32_t w[(VW + 3) / 4];
  if constexpr (VW == 1) {
    w[0] = *p;
  } else if constexpr (VW == 2) {
    w[0] = *reinterpret_cast<const uint16_t*>(p);
  } else if constexpr (VW == 4) {
    w[0] = *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (VW == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x, w[1] = v.y;
  } else {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  }
#pragma unroll
  for (int e = 0; e < VW; ++e) a[e] = (uint8_t)(w[e / 4] >> (8 * (e % 4)));
}

template <int VW>
__device__ __forceinline__ void store_bytes(uint8_t* p, const uint8_t (&a)[VW]) {
  static_assert(VW == 1 || VW == 2 || VW == 4 || VW == 8 || VW == 16, "byte vector width");
  uint32_t w[(VW + 3) / 4] = {};
#pragma unroll
  for (int e = 0; e < VW; ++e) w[e / 4] |= (uint32_t)a[e] << (8 * (e % 4));
  if constexpr (VW == 1) {
    *p = (uint8_t)w[0];
  } else if constexpr (VW == 2) {
    *reinterpret_cast<uint16_t*>(p) = (uint16_t)w[0];
  } else if constexpr (VW == 4) {
    *reinterpret_cast<uint32_t*>(p) = w[0];
  } else if constexpr (VW == 8) {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else {
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

inline bool aligned_to(const void* p, int bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

inline cudaError_t launch_status() { return cudaGetLastError(); }

// The two entry points of a bandwidth-bound body `name##_body<T, VW>`: `name##_kernel` (one
// channel per thread) and `name##_v16_kernel` (16-byte vectors of 16 / sizeof(T) channels).
// PARAMS / ARGS: the parenthesized parameter and argument lists. Named apart rather than by a
// width template argument because the static report's known-failures list is
// whitespace-separated and a demangled "k<T, 8>" has a space.
#define IFAST_VEC_ENTRY_POINTS(name, threads, PARAMS, ARGS)             \
  template <typename T>                                                 \
  __global__ void __launch_bounds__(threads) name##_kernel PARAMS {     \
    name##_body<T, 1> ARGS;                                             \
  }                                                                     \
  template <typename T>                                                 \
  __global__ void __launch_bounds__(threads) name##_v16_kernel PARAMS { \
    name##_body<T, 16 / sizeof(T)> ARGS;                                \
  }

// Grid and block of a launch.
struct LaunchShape {
  dim3 grid, block;
};

// The bandwidth-bound kernels have a 16-byte-vector entry point and a one-channel one over one
// body: launch k_vec when `vec` (C / V channel vectors), else k_one (C channels), on the shape
// that shape_for(number of channel vectors) gives, with the same arguments.
template <int V, typename ShapeFn, typename... P, typename... A>
void launch_vec_or_one(bool vec, int C, ShapeFn shape_for, void (*k_vec)(P...),
                       void (*k_one)(P...), cudaStream_t stream, A... args) {
  const LaunchShape ls = shape_for(vec ? C / V : C);
  (vec ? k_vec : k_one)<<<ls.grid, ls.block, 0, stream>>>(args...);
}

// Dispatch a DType to a storage type T for `body`, e.g. IFAST_DISPATCH(dt, launch<T>(...)).
#define IFAST_DISPATCH_ALL(dt, ...)                                   \
  switch (dt) {                                                       \
    case DType::F32: { using T = float; __VA_ARGS__; break; }         \
    case DType::F16: { using T = __half; __VA_ARGS__; break; }        \
    case DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
  }

}  // namespace ifast
