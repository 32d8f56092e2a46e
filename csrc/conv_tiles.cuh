// Shared-memory tile loaders and the conv epilogue shared by asym_conv.cu and grid_reduction.cu.
#pragma once
#include "common.cuh"

namespace ifast {

// Copy `count` (<= 16 bytes worth) consecutive channels x[base + c0 ...] into dst, zero past C.
// Uses one 16-byte load when the row is aligned for it (C a multiple of the vector width).
template <typename T>
__device__ __forceinline__ void load_vec(T* dst, const T* __restrict__ src_row, int c0, int C,
                                         bool vec_ok) {
  constexpr int V = 16 / sizeof(T);
  if (vec_ok && c0 + V <= C) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src_row + c0);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) dst[e] = (c0 + e < C) ? src_row[c0 + e] : zero_val<T>();
  }
}

template <typename T>
__device__ __forceinline__ void zero_vec(T* dst) {
  *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
}

// Store one output value per (pixel row, channel) and keep BN-statistics partials.
// raw = the fp32 accumulator. Returns nothing; s / ss accumulate raw and raw^2.
template <typename T>
__device__ __forceinline__ void epilogue_store(const Epilogue& ep, int64_t pixel, int co, float raw,
                                               float& s, float& ss) {
  float v = raw;
  if (ep.scale) v = bn_relu(raw, ep.scale[co], ep.shift[co]);
  static_cast<T*>(ep.out)[pixel * ep.out_c + ep.out_off + co] = from_f<T>(v);
  s += raw;
  ss += raw * raw;
}

// Per-lane channel partials -> fp64 accumulators (lanes l and l ^ 16 hold the same channel).
__device__ __forceinline__ void epilogue_stats_16(const Epilogue& ep, int lane, int co, int Co,
                                                  float s, float ss) {
  s += __shfl_xor_sync(0xffffffffu, s, 16);
  ss += __shfl_xor_sync(0xffffffffu, ss, 16);
  if (ep.sum && lane < 16 && co < Co) {
    atomicAdd(ep.sum + co, (double)s);
    atomicAdd(ep.sumsq + co, (double)ss);
  }
}

}  // namespace ifast
