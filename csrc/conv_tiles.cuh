// Shared-memory tile loaders, the cp.async pipeline primitives, the tensor-core fragment
// primitives (ldmatrix + mma.sync m16n8k16, sm_80+) and the conv epilogue shared by
// asym_conv.cu and grid_reduce.cu.
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
// next pipeline stages stay in flight while the current one is multiplied. `valid` false:
// nothing is read (src may be any mapped address) and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), "l"(src),
                 "r"(valid ? 16 : 0));
}
// One group per pipeline step (committed even when empty, so that "all but the newest N
// groups" always means "every step up to s").
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N of this thread's groups are in flight; a __syncthreads() after it
// publishes everyone's copies.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Either a 16-byte cp.async (`async`: the caller waits for its group) or a plain copy through
// the registers (channels not vector-aligned: load_vec's element path), zeros when !valid.
template <typename T>
__device__ __forceinline__ void stage_vec(T* dst, const T* __restrict__ row, int c0, int C,
                                          bool valid, bool async, const T* any_ptr) {
  if (async) {  // C % V == 0: a vector is wholly inside or outside
    const bool in = valid && c0 < C;
    cp_async_16(dst, in ? row + c0 : any_ptr, in);
  } else if (valid) {
    load_vec<T>(dst, row, c0, C, false);
  } else {
    zero_vec<T>(dst);
  }
}

// ---- tensor-core fragments (PTX ISA, "Matrix fragments for mma.m16n8k16") -------------------
// The same path for fp16 and bf16: nvcuda::wmma loads bf16 tiles with generic LD instructions
// (no LDSM), so the kernels use ldmatrix and mma.sync directly. Lane = 4 g + q holds, of a
// 16x8 fp32 accumulator, rows g and g + 8 at columns 2q, 2q + 1 (d[0..1] and d[2..3]).

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// A operand, 16x16 row-major in shared memory: lane l passes the shared address of row l % 16,
// column 8 * (l / 16) (any row: the rows need not be consecutive); registers come back in mma's
// a0..a3 order (rows 0-7 / 8-15 x columns 0-7 / 8-15).
__device__ __forceinline__ void ldsm_a(uint32_t (&a)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

// B operands of two adjacent n8 tiles from a K x N row-major tile (16 rows of K): lane l passes
// &tile[l % 16][8 * (l / 16)]; b[0], b[1] feed the first n8 tile, b[2], b[3] the second.
__device__ __forceinline__ void ldsm_b2(uint32_t (&b)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
               : "r"(smem_addr(p)));
}

template <typename T> struct MmaType;
template <> struct MmaType<__half> { static constexpr bool bf16 = false; };
template <> struct MmaType<__nv_bfloat16> { static constexpr bool bf16 = true; };

#define IFAST_MMA_16816(TY)                                                                     \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0, %1, %2, %3}, "    \
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"                                \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (MmaType<T>::bf16) {
    IFAST_MMA_16816("bf16");
  } else {
    IFAST_MMA_16816("f16");
  }
}
#undef IFAST_MMA_16816

template <int MI, int NI>
__device__ __forceinline__ void zero_acc(float (&acc)[MI][NI][4]) {
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
}

// One k16 step of a warp tile of MI m16 x NI n8 tiles (NI even). a_addr[i]: the shared address
// of this lane's A row of m16 tile i at column kk = 0 (row l % 16 of the tile, column
// 8 * (l / 16); `a_shift` bytes added: the stage and, in the asymmetric conv, the tap's row
// shift). Bs: the K x N tile (the warp's first column at b_col0).
template <typename T, int MI, int NI, int LDB>
__device__ __forceinline__ void warp_mma_k16(float (&acc)[MI][NI][4], const uint32_t (&a_addr)[MI],
                                             uint32_t a_shift, const T (*Bs)[LDB], int b_col0,
                                             int kk, int lane) {
  const int r = lane % 16, c8 = 8 * (lane / 16);
  uint32_t b[NI / 2][4];
#pragma unroll
  for (int p = 0; p < NI / 2; ++p) ldsm_b2(b[p], &Bs[kk + r][b_col0 + 16 * p + c8]);
#pragma unroll
  for (int i = 0; i < MI; ++i) {
    uint32_t a[4];
    ldsm_a(a, a_addr[i] + a_shift + kk * (uint32_t)sizeof(T));
#pragma unroll
    for (int j = 0; j < NI; ++j)
      mma_16816<T>(acc[i][j], a, b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
  }
}

// ---- epilogue ---------------------------------------------------------------------------------
// Two passes so that the global stores are 16 bytes wide: (1) every warp writes its fragments,
// BN + ReLU applied (scale / shift loaded once per column, outside the row loops), as T into a
// shared C tile [kMT][LDC] (144-byte rows: the 8 rows x 4 column pairs of a fragment store hit
// 32 distinct banks) while the BN-statistics partials of the raw fp32 values stay in registers;
// (2) after a barrier each thread copies 16-byte row pieces to the output (one STG.128 per 8
// channels; element stores only for a ragged channel tail or an unaligned slice).

template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Pass 1. row0 / col0: the warp's first row / column in the block tile; valid_rows: rows at or
// past it are padding (neither counted in the statistics nor stored); co_w = co0 + col0.
template <typename T, int MI, int NI, int LDC>
__device__ __forceinline__ void fragments_to_smem(const Epilogue& ep, const float (&acc)[MI][NI][4],
                                                  T (*Cs)[LDC], int row0, int col0, int co_w,
                                                  int Co, int valid_rows, int lane,
                                                  float (&s)[NI][2], float (&ss)[NI][2]) {
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int j = 0; j < NI; ++j) {
    const int co = co_w + 8 * j + 2 * q;
    float sc[2] = {1.f, 1.f}, sh[2] = {0.f, 0.f};  // hoisted out of the row loops
    if (ep.scale) {
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (co + e < Co) sc[e] = ep.scale[co + e], sh[e] = ep.shift[co + e];
    }
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = row0 + 16 * i + g + 8 * h;
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float raw = acc[i][j][2 * h + e];
          if (row < valid_rows && co + e < Co) {
            s[j][e] += raw;
            ss[j][e] += raw * raw;
          }
          v[e] = ep.scale ? bn_relu(raw, sc[e], sh[e]) : raw;
        }
        *reinterpret_cast<uint32_t*>(&Cs[row][col0 + 8 * j + 2 * q]) = pack2<T>(v[0], v[1]);
      }
  }
}

// Pass 2 (after a __syncthreads): rows [0, valid_rows) x channels [co0, min(co0 + NT, Co)) of
// the C tile into their output pixels; pixel_of(row) gives the NHWC pixel index. vec_out: the
// slice allows 16-byte stores (out_c, out_off multiples of 8 elements, pointer 16-aligned).
template <typename T, int NT, int LDC, int THREADS, typename PixelOf>
__device__ __forceinline__ void smem_to_out(const Epilogue& ep, const T (*Cs)[LDC], int valid_rows,
                                            int co0, int Co, bool vec_out, PixelOf pixel_of) {
  constexpr int V = 16 / sizeof(T), VPR = NT / V;
  T* out = static_cast<T*>(ep.out) + ep.out_off + co0;
  const int ncols = min(NT, Co - co0);
  for (int idx = threadIdx.x; idx < valid_rows * VPR; idx += THREADS) {
    const int row = idx / VPR, cv = (idx % VPR) * V;
    if (cv >= ncols) continue;
    T* dst = out + pixel_of(row) * ep.out_c + cv;
    if (vec_out && cv + V <= ncols) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(&Cs[row][cv]);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (cv + e < ncols) dst[e] = Cs[row][cv + e];
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

// Shared memory of the two tensor-core conv kernels: A_STAGES activation tiles of A_ROWS rows
// (80-byte rows: ldmatrix rows 16-byte aligned, 8 consecutive rows in distinct banks),
// B_STAGES weight tiles (144-byte rows), the statistics exchange; the epilogue's C tile
// (MT x NT, 144-byte rows) reuses the A tiles once the main loop is done.
template <typename T, int A_STAGES, int A_ROWS, int B_STAGES, int MT_, int NT_, int BK_>
struct MmaSmem {
  static constexpr int MT = MT_, NT = NT_, BK = BK_;
  static constexpr int LDA = BK + 8, LDB = NT + 8, LDC = NT + 8;
  static constexpr uint32_t kAStageBytes = A_ROWS * LDA * sizeof(T);
  static_assert(MT * LDC * sizeof(T) <= A_STAGES * kAStageBytes, "C tile reuses the A tiles");
  T As[A_STAGES][A_ROWS][LDA];
  T Bs[B_STAGES][BK][LDB];
  float red[2][2][NT];
  __device__ __forceinline__ T (*c_tile())[LDC] {
    return reinterpret_cast<T (*)[LDC]>(&As[0][0][0]);
  }
};

// The epilogue of the tensor-core kernels (4 warps as 2 x 2, warp tiles of 4 x 4 m16n8
// fragments = 64 x 32): once every copy has landed and every warp is done with the A tiles,
// fragments -> C tile (BN + ReLU or raw; statistics of the valid rows), 16-byte stores of rows
// [0, valid_rows) to pixel_of(row), then the block's statistics partials.
template <typename T, int THREADS, typename Smem, typename PixelOf>
__device__ __forceinline__ void mma_epilogue(Smem& sm, const Epilogue& ep,
                                             const float (&acc)[4][4][4], int lane, int wm, int wn,
                                             int co0, int Co, int valid_rows, bool vec_out,
                                             PixelOf pixel_of) {
  cp_async_wait<0>();
  __syncthreads();
  auto Cs = sm.c_tile();
  float s[4][2] = {}, ss[4][2] = {};
  fragments_to_smem<T, 4, 4, Smem::LDC>(ep, acc, Cs, 64 * wm, 32 * wn, co0 + 32 * wn, Co,
                                        valid_rows, lane, s, ss);
  __syncthreads();
  smem_to_out<T, Smem::NT, Smem::LDC, THREADS>(ep, Cs, valid_rows, co0, Co, vec_out, pixel_of);
  if (ep.part) stats_partials<4, 2, Smem::NT>(ep, s, ss, lane, wm, 32 * wn, co0, Co, sm.red);
}

// Whether an epilogue's output slice takes 16-byte stores of T.
template <typename T>
inline bool out_vec_ok(const Epilogue& ep) {
  constexpr int V = 16 / sizeof(T);
  return ep.out_c % V == 0 && ep.out_off % V == 0 && aligned_to(ep.out, 16);
}

}  // namespace ifast
