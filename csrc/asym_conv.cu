// Asymmetric 1xn / nx1 convolution (Inception-v3: 1x7 and 7x1 at 17x17, 1x3 and 3x1 at 8x8),
// NHWC, stride 1, zero padding along the tap axis.
//
// A "line" is one image row (1xn: taps run along W) or one image column (nx1: taps along H).
// A block takes LB whole lines and stores each, zero-padded by `pad` on both sides, in shared
// memory once per input-channel chunk: smem row r = j * Lp + u holds line j at position u - pad
// (Lp = L + 2 * pad). The output at virtual row q = j * Lp + v (v < Lo = Lp - taps + 1) is then
//     out[q, co] = sum_t sum_ci smem[q + t, ci] * w[t, ci, co]
// i.e. every tap is the same smem tile shifted by t rows: one global read of each input pixel
// feeds all `taps` taps, the halo is the baked-in zero padding, and rows q with v >= Lo are
// computed but not stored. fp16 / bf16 use tensor cores (ldmatrix + mma.sync m16n8k16, fp32
// accumulate); fp32 runs on CUDA cores. The epilogue optionally folds eval BN + ReLU, or keeps
// the training BN statistics of the raw output while it is in registers (per-block partials,
// summed in a fixed order afterwards: deterministic).
// Reference: torch.nn.functional.conv2d (inception_fast/ops/csrc_reference.py: asym_conv).
#include "conv_tiles.cuh"

namespace ifast {
namespace {

constexpr int kMT = 128;           // virtual output rows per block
constexpr int kNT = 64;            // output channels per block
constexpr int kBK = 32;            // input channels per chunk
constexpr int kMaxTaps = 7;
constexpr int kARows = kMT + 8;    // >= kMT + kMaxTaps - 1
constexpr int kThreads = 128;

struct AsymGeom {
  int N, H, W, Ci, Co, taps, pad;
  bool vertical;
  bool vec_x, vec_w;  // 16-byte loads allowed (channel count and base pointer aligned)
  int L, Lo, Lp, lines, lb;  // line length in / out, padded length, number of lines, lines/block

  // First pixel of line `line` in the input / output, and the pixel step along the line.
  __device__ __forceinline__ int64_t in_base(int line) const {
    if (!vertical) return (int64_t)line * W;
    const int n = line / W, w = line - (line / W) * W;
    return (int64_t)n * H * W + w;
  }
  __device__ __forceinline__ int64_t out_base(int line) const {
    if (!vertical) return (int64_t)line * Lo;
    const int n = line / W, w = line - (line / W) * W;
    return (int64_t)n * Lo * W + w;
  }
  __device__ __forceinline__ int step() const { return vertical ? W : 1; }
};

// Fill the A tile: kARows rows x kBK channels of the padded lines of this block. ASYNC (the
// tensor-core kernel's pipeline): 16-byte cp.async where the channels are vector-aligned (the
// caller waits and synchronizes before reading); otherwise, or without ASYNC, plain stores.
template <typename T, int LD, bool ASYNC>
__device__ __forceinline__ void load_lines(T (*As)[LD], const T* __restrict__ x, const AsymGeom& g,
                                           int line0, int ci0, bool vec_ok) {
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kBK / V;  // vectors per row
  for (int i = threadIdx.x; i < kARows * VPR; i += kThreads) {
    const int r = i / VPR, cv = (i % VPR) * V;
    const int j = r / g.Lp, pos = r % g.Lp - g.pad;
    const int line = line0 + j;
    const bool valid = j < g.lb && line < g.lines && pos >= 0 && pos < g.L;
    if (ASYNC && vec_ok) {  // vec_ok: Ci % V == 0, so a vector is wholly inside or outside
      const bool any = valid && ci0 + cv < g.Ci;
      const T* src = any ? x + (g.in_base(line) + (int64_t)pos * g.step()) * g.Ci + ci0 + cv : x;
      cp_async_16(&As[r][cv], src, any);
    } else if (valid) {
      const T* row = x + (g.in_base(line) + (int64_t)pos * g.step()) * g.Ci;
      load_vec<T>(&As[r][cv], row, ci0 + cv, g.Ci, vec_ok);
    } else {
      zero_vec<T>(&As[r][cv]);
    }
  }
}

// Fill the B tile of tap t: kBK input channels x kNT output channels of w_packed [taps][Ci][Co]
// (ASYNC as load_lines).
template <typename T, int LD, bool ASYNC>
__device__ __forceinline__ void load_weights(T (*Bs)[LD], const T* __restrict__ w, int t, int ci0,
                                             int co0, int Ci, int Co, bool vec_ok) {
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kNT / V;
  for (int i = threadIdx.x; i < kBK * VPR; i += kThreads) {
    const int k = i / VPR, cv = (i % VPR) * V;
    const T* row = w + ((int64_t)t * Ci + ci0 + k) * Co;
    if (ASYNC && vec_ok) {
      const bool any = ci0 + k < Ci && co0 + cv < Co;
      cp_async_16(&Bs[k][cv], any ? row + co0 + cv : w, any);
    } else if (ci0 + k < Ci) {
      load_vec<T>(&Bs[k][cv], row, co0 + cv, Co, vec_ok);
    } else {
      zero_vec<T>(&Bs[k][cv]);
    }
  }
}

// Map a virtual row q of this block to its output pixel; -1 when q is padding / past the end.
__device__ __forceinline__ int64_t virtual_row_pixel(const AsymGeom& g, int line0, int q) {
  const int j = q / g.Lp, v = q % g.Lp;
  const int line = line0 + j;
  if (j >= g.lb || line >= g.lines || v >= g.Lo) return -1;
  return g.out_base(line) + (int64_t)v * g.step();
}

/// Tensor-core path (fp16 / bf16): ldmatrix + mma.sync m16n8k16, fp32 accumulate.
/// 4 warps as 2 x 2: warp (wm, wn) owns virtual rows [64 wm, 64 wm + 64) x output channels
/// [32 wn, 32 wn + 32) of the block's 128 x 64 tile (4 x 4 m16n8 fragments, 64 fp32 registers).
/// Per 32-channel chunk the block reads the A tile once (136 padded rows x 32 ch = 8.7 KB bf16)
/// and one 32 x 64 weight tile per tap (4 KB; from L2: every block reads the same weights), and
/// computes 2 * 128 * 64 * 32 * taps FLOP (3.7 MFLOP for 7 taps): ~100 FLOP per byte staged, so
/// the ceiling aimed at is the mma.sync rate, not bandwidth; each k16 step issues 4 LDSM (A) +
/// 2 LDSM.T (B) per 16 HMMA. Shared rows of 80 B (A) and 144 B (B) put the 8 rows of every
/// ldmatrix phase in distinct banks (conflict-free). Operands arrive by cp.async in a 2-stage
/// pipeline (one barrier per tap; the next tap's weights load during this tap's MMAs). At 17x17
/// with 7 taps 66% of the virtual rows are real outputs (5 padded lines of 23 per 128 rows, 17
/// of each 23 stored).
template <typename T>
__global__ void __launch_bounds__(kThreads)
asym_conv_mma_kernel(const T* __restrict__ x, const T* __restrict__ w, AsymGeom g, Epilogue ep,
                     bool pair_ok) {
  constexpr int LDA = kBK + 8;  // 80-byte rows: ldmatrix rows 16-byte aligned, banks distinct
  constexpr int LDB = kNT + 8;  // 144-byte rows
  constexpr int MI = 4, NI = 4;  // the warp tile: 64 rows x 32 channels
  // Two stages: while step s = (chunk, tap) is multiplied, the weights of step s + 1 (and, at a
  // chunk's last tap, the next chunk's lines) are in flight into the other buffers.
  __shared__ __align__(16) T As[2][kARows][LDA];
  __shared__ __align__(16) T Bs[2][kBK][LDB];
  __shared__ float red[2][2][kNT];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 2, wn = warp % 2;
  const int line0 = blockIdx.x * g.lb;
  const int co0 = blockIdx.y * kNT;
  const bool vec_x = g.vec_x, vec_w = g.vec_w;

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  const int steps = ((g.Ci + kBK - 1) / kBK) * g.taps;
  load_lines<T, LDA, true>(As[0], x, g, line0, 0, vec_x);
  load_weights<T, LDB, true>(Bs[0], w, 0, 0, co0, g.Ci, g.Co, vec_w);
  cp_async_commit();
  for (int s = 0; s < steps; ++s) {
    const int chunk = s / g.taps, t = s - chunk * g.taps;
    cp_async_wait_all();
    // Step s's tiles are now visible to every thread, and every thread is done with step
    // s - 1, whose buffers the loads below overwrite.
    __syncthreads();
    if (s + 1 < steps) {
      const int c1 = (s + 1) / g.taps, t1 = s + 1 - c1 * g.taps;
      if (t1 == 0) load_lines<T, LDA, true>(As[c1 % 2], x, g, line0, c1 * kBK, vec_x);
      load_weights<T, LDB, true>(Bs[(s + 1) % 2], w, t1, c1 * kBK, co0, g.Ci, g.Co, vec_w);
      cp_async_commit();
    }
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16)  // the tap = a shift of t rows of the A tile
      warp_mma_k16<T, MI, NI, LDA, LDB>(acc, As[chunk % 2], 64 * wm + t, Bs[s % 2], 32 * wn, kk,
                                        lane);
  }

  // Epilogue straight from the fragments (rows g and g + 8 of each m16 tile).
  int64_t pix[MI][2];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      pix[i][h] = virtual_row_pixel(g, line0, 64 * wm + 16 * i + lane / 4 + 8 * h);
  float s[NI][2] = {}, ss[NI][2] = {};
  epilogue_fragments<T, MI, NI>(ep, acc, pix, co0 + 32 * wn, g.Co, pair_ok, lane, s, ss);
  if (ep.part) stats_partials<NI, 2, kNT>(ep, s, ss, lane, wm, 32 * wn, co0, g.Co, red);
}

/// fp32 path on CUDA cores, same block tile (full-precision fp32 has no tensor-core path).
/// Same global traffic per tile as the tensor-core kernel at twice the bytes per element; per
/// k step a thread reads 16 A floats + one float4 of B from shared memory for 64 FMA (1.6 FLOP
/// per shared byte), so the ceiling aimed at is the FFMA rate (~60 TFLOP/s fp32 on an H100),
/// shared-memory reads just below it.
/// Thread (ty = tid / 16, tx = tid % 16) computes rows
/// ty + 8 i (i < 16) x channels 4 tx .. 4 tx + 3.
__global__ void __launch_bounds__(kThreads)
asym_conv_f32_kernel(const float* __restrict__ x, const float* __restrict__ w, AsymGeom g,
                     Epilogue ep) {
  constexpr int LDA = kBK + 4;
  constexpr int LDB = kNT + 4;
  constexpr int RPT = kMT / 8;  // rows per thread
  __shared__ __align__(16) float As[kARows][LDA];
  __shared__ __align__(16) float Bs[kBK][LDB];

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int line0 = blockIdx.x * g.lb;
  const int co0 = blockIdx.y * kNT;
  const bool vec_x = g.vec_x, vec_w = g.vec_w;

  float acc[RPT][4];
#pragma unroll
  for (int i = 0; i < RPT; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int ci0 = 0; ci0 < g.Ci; ci0 += kBK) {
    __syncthreads();
    load_lines<float, LDA, false>(As, x, g, line0, ci0, vec_x);
    for (int t = 0; t < g.taps; ++t) {
      load_weights<float, LDB, false>(Bs, w, t, ci0, co0, g.Ci, g.Co, vec_w);
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kBK; ++k) {
        const float4 b = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
          const float a = As[ty + 8 * i + t][k];
          acc[i][0] = fmaf(a, b.x, acc[i][0]);
          acc[i][1] = fmaf(a, b.y, acc[i][1]);
          acc[i][2] = fmaf(a, b.z, acc[i][2]);
          acc[i][3] = fmaf(a, b.w, acc[i][3]);
        }
      }
      __syncthreads();
    }
  }

  float s[4] = {0.f, 0.f, 0.f, 0.f}, ss[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int64_t pixel = virtual_row_pixel(g, line0, ty + 8 * i);
    if (pixel < 0) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int co = co0 + tx * 4 + j;
      if (co < g.Co) epilogue_store<float>(ep, pixel, co, acc[i][j], s[j], ss[j]);
    }
  }
  if (ep.part) {
    // Fixed order: lanes tx and tx + 16 of a warp share channels, then the 4 warps in order.
    __shared__ float red[kThreads / 32][2][kNT];
    const int warp = threadIdx.x / 32;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s[j] += __shfl_xor_sync(0xffffffffu, s[j], 16);
      ss[j] += __shfl_xor_sync(0xffffffffu, ss[j], 16);
      if ((threadIdx.x % 32) < 16) {
        red[warp][0][tx * 4 + j] = s[j];
        red[warp][1][tx * 4 + j] = ss[j];
      }
    }
    __syncthreads();
    const int co = co0 + threadIdx.x;
    if (threadIdx.x < kNT && co < g.Co) {
      float a = 0.f, b = 0.f;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) {
        a += red[w][0][threadIdx.x];
        b += red[w][1][threadIdx.x];
      }
      ep.part[(int64_t)blockIdx.x * g.Co + co] = a;
      ep.part[((int64_t)gridDim.x + blockIdx.x) * g.Co + co] = b;
    }
  }
}

}  // namespace

int64_t asym_conv_row_blocks(int N, int H, int W, int taps, int pad, bool vertical) {
  const int Lp = (vertical ? H : W) + 2 * pad;
  if (Lp > kMT || Lp < 1) return 0;
  const int64_t lines = (int64_t)(vertical ? W : H) * N, lb = kMT / Lp;
  return (lines + lb - 1) / lb;
}

int asym_conv_max_padded_line() { return kMT; }
int asym_conv_max_taps() { return kMaxTaps; }

cudaError_t launch_asym_conv(DType dt, const void* x, const void* w_packed, int N, int H, int W,
                             int Ci, int Co, int taps, int pad, bool vertical, Epilogue ep,
                             cudaStream_t stream) {
  AsymGeom g;
  g.N = N; g.H = H; g.W = W; g.Ci = Ci; g.Co = Co; g.taps = taps; g.pad = pad;
  g.vertical = vertical;
  g.L = vertical ? H : W;
  g.Lp = g.L + 2 * pad;
  g.Lo = g.Lp - taps + 1;
  g.lines = vertical ? N * W : N * H;
  if (taps < 1 || taps > kMaxTaps || g.Lp > kMT || g.Lo < 1) return cudaErrorInvalidValue;
  g.lb = kMT / g.Lp;
  const int V = dt == DType::F32 ? 4 : 8;
  g.vec_x = Ci % V == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  g.vec_w = Co % V == 0 && reinterpret_cast<uintptr_t>(w_packed) % 16 == 0;
  if (g.lines == 0 || Co == 0) return cudaSuccess;
  if (ep.sum && !ep.part) return cudaErrorInvalidValue;  // statistics go through partials
  dim3 grid((g.lines + g.lb - 1) / g.lb, (Co + kNT - 1) / kNT);
  const bool pair_ok = ep.out_c % 2 == 0 && ep.out_off % 2 == 0 &&
                       reinterpret_cast<uintptr_t>(ep.out) % 4 == 0;
  switch (dt) {
    case DType::F32:
      asym_conv_f32_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(x),
                                                          static_cast<const float*>(w_packed), g, ep);
      break;
    case DType::F16:
      asym_conv_mma_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(w_packed), g, ep, pair_ok);
      break;
    case DType::BF16:
      asym_conv_mma_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w_packed), g, ep,
          pair_ok);
      break;
  }
  cudaError_t e = launch_status();
  if (e == cudaSuccess && ep.sum)
    e = launch_reduce_partials(ep.part, grid.x, Co, ep.sum, ep.sumsq, stream);
  return e;
}

}  // namespace ifast
