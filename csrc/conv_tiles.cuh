// Shared-memory tile loaders, the tensor-core fragment primitives (ldmatrix + mma.sync
// m16n8k16, sm_80+) and the conv epilogue shared by asym_conv.cu and grid_reduction.cu.
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

// 16-byte global -> shared copy that bypasses the registers (cp.async, sm_80+): the loads of the
// next pipeline stage stay in flight while the current one is multiplied. `valid` false:
// nothing is read (src may be any mapped address) and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait for all of this thread's copies; a __syncthreads() after it publishes everyone's.
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// ---- tensor-core fragments (PTX ISA, "Matrix fragments for mma.m16n8k16") -------------------
// The same path for fp16 and bf16: nvcuda::wmma loads bf16 tiles with generic LD instructions
// (no LDSM), so the kernels use ldmatrix and mma.sync directly. Lane = 4 g + q holds, of a
// 16x8 fp32 accumulator, rows g and g + 8 at columns 2q, 2q + 1 (d[0..1] and d[2..3]).

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// A operand, 16x16 row-major in shared memory: lane l passes &tile[l % 16][8 * (l / 16)];
// registers come back in mma's a0..a3 order (rows 0-7 / 8-15 x columns 0-7 / 8-15).
__device__ __forceinline__ void ldsm_a(uint32_t (&a)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(smem_addr(p)));
}

// B operands of two adjacent n8 tiles from a K x N row-major tile (16 rows of K): lane l passes
// &tile[l % 16][8 * (l / 16)]; b[0], b[1] feed the first n8 tile, b[2], b[3] the second.
__device__ __forceinline__ void ldsm_b2(uint32_t (&b)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
               : "r"(smem_addr(p)));
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One k16 step of a warp tile of MI m16 x NI n8 tiles (NI even). As: rows of the A tile (the
// warp's first row at a_row0), Bs: the K x N tile (the warp's first column at b_col0).
template <typename T, int MI, int NI, int LDA, int LDB>
__device__ __forceinline__ void warp_mma_k16(float (&acc)[MI][NI][4], const T (*As)[LDA],
                                             int a_row0, const T (*Bs)[LDB], int b_col0, int kk,
                                             int lane) {
  const int r = lane % 16, c8 = 8 * (lane / 16);
  uint32_t b[NI / 2][4];
#pragma unroll
  for (int p = 0; p < NI / 2; ++p) ldsm_b2(b[p], &Bs[kk + r][b_col0 + 16 * p + c8]);
#pragma unroll
  for (int i = 0; i < MI; ++i) {
    uint32_t a[4];
    ldsm_a(a, &As[a_row0 + 16 * i + r][kk + c8]);
#pragma unroll
    for (int j = 0; j < NI; ++j)
      mma_16816<T>(acc[i][j], a, b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
  }
}

// ---- epilogue ---------------------------------------------------------------------------------

// Store one output value per (pixel row, channel) and keep BN-statistics partials (CUDA-core
// path). raw = the fp32 accumulator; s / ss accumulate raw and raw^2.
template <typename T>
__device__ __forceinline__ void epilogue_store(const Epilogue& ep, int64_t pixel, int co, float raw,
                                               float& s, float& ss) {
  float v = raw;
  if (ep.scale) v = bn_relu(raw, ep.scale[co], ep.shift[co]);
  static_cast<T*>(ep.out)[pixel * ep.out_c + ep.out_off + co] = from_f<T>(v);
  s += raw;
  ss += raw * raw;
}

template <typename T>
__device__ __forceinline__ void store_pair(T* p, float a, float b);
template <>
__device__ __forceinline__ void store_pair<__half>(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}
template <>
__device__ __forceinline__ void store_pair<__nv_bfloat16>(__nv_bfloat16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}

// Store a warp's accumulator fragments and keep each lane's per-column BN-statistics partials.
// pix[i][h]: output pixel of row g + 8 h of m16 tile i (-1: padding / past the end, neither
// stored nor counted). co_w: the warp's first output channel. pair_ok: two adjacent channels
// may be stored as one 4-byte word (out_c, out_off and the pointer even).
template <typename T, int MI, int NI>
__device__ __forceinline__ void epilogue_fragments(const Epilogue& ep,
                                                   const float (&acc)[MI][NI][4],
                                                   const int64_t (&pix)[MI][2], int co_w, int Co,
                                                   bool pair_ok, int lane, float (&s)[NI][2],
                                                   float (&ss)[NI][2]) {
  const int q = lane % 4;
  T* out = static_cast<T*>(ep.out) + ep.out_off;
#pragma unroll
  for (int j = 0; j < NI; ++j) {
    const int co = co_w + 8 * j + 2 * q;
    float sc[2] = {1.f, 1.f}, sh[2] = {0.f, 0.f};  // scale / shift hoisted out of the rows
    if (ep.scale) {
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (co + e < Co) sc[e] = ep.scale[co + e], sh[e] = ep.shift[co + e];
    }
#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (pix[i][h] < 0) continue;
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float raw = acc[i][j][2 * h + e];
          if (co + e < Co) {
            s[j][e] += raw;
            ss[j][e] += raw * raw;
          }
          v[e] = ep.scale ? bn_relu(raw, sc[e], sh[e]) : raw;
        }
        T* dst = out + pix[i][h] * ep.out_c + co;
        if (pair_ok && co + 1 < Co) {
          store_pair<T>(dst, v[0], v[1]);
        } else {
          if (co < Co) dst[0] = from_f<T>(v[0]);
          if (co + 1 < Co) dst[1] = from_f<T>(v[1]);
        }
      }
    }
  }
}

// The block's BN-statistics partials, in a fixed order: lanes with the same columns (xor 4, 8,
// 16), then the WM warps that share columns in order of their row position, one fp32 value per
// (row block, channel) into ep.part. Called by every thread of the block (it synchronizes).
// red: shared [WM][2][NT]; col_w: the warp's first column within the block's NT.
template <int NI, int WM, int NT>
__device__ __forceinline__ void stats_partials(const Epilogue& ep, float (&s)[NI][2],
                                               float (&ss)[NI][2], int lane, int wm, int col_w,
                                               int co0, int Co, float (*red)[2][NT]) {
#pragma unroll
  for (int j = 0; j < NI; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int off = 4; off < 32; off *= 2) {
        s[j][e] += __shfl_xor_sync(0xffffffffu, s[j][e], off);
        ss[j][e] += __shfl_xor_sync(0xffffffffu, ss[j][e], off);
      }
      if (lane < 4) {
        red[wm][0][col_w + 8 * j + 2 * lane + e] = s[j][e];
        red[wm][1][col_w + 8 * j + 2 * lane + e] = ss[j][e];
      }
    }
  __syncthreads();
  const int64_t rows = gridDim.x;
  for (int t = threadIdx.x; t < NT; t += blockDim.x) {
    const int co = co0 + t;
    if (co >= Co) continue;
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int w = 0; w < WM; ++w) {
      a += red[w][0][t];
      b += red[w][1][t];
    }
    ep.part[(int64_t)blockIdx.x * Co + co] = a;
    ep.part[(rows + blockIdx.x) * Co + co] = b;
  }
}

}  // namespace ifast
