// Asymmetric 1xn / nx1 convolution (Inception-v3: 1x7 and 7x1 at 17x17, 1x3 and 3x1 at 8x8),
// NHWC, stride 1, zero padding along the tap axis.
//
// A "line" is one image row (1xn: taps run along W) or one image column (nx1: taps along H).
// A block takes lb whole lines and stages them, per input-channel chunk, in shared memory once:
// line j's position p (0 <= p < L) sits in smem row pad + j * S + p with S = L + pad, so
// consecutive lines share one gap of `pad` zero rows (the right halo of line j and the left halo
// of line j + 1: both only need zeros). Output v of line j then reads smem rows
//     j * S + v + t   (t < taps)
// i.e. every tap is the same staged tile shifted by t rows: one global read of each input pixel
// feeds all `taps` taps and the halo is the baked-in zero gap. The GEMM's M rows are the block's
// output pixels flattened, m = j * Lo + v (ldmatrix takes one row address per lane, so the rows
// of an m16 tile need not be consecutive in shared memory), and lb = kMT / Lo lines fill the
// 128-row tile (as far as the A tile's kARows rows allow).
// Wasted MMA rows (computed, not stored), Inception shapes: 17x17 with 7 taps: 128 - 7 * 17 = 9
// of 128 (7 %; one padded 23-row line per 128-row tile before: 43 of 128, 34 %); 8x8 with 3
// taps: 0 of 128 (12 lines of 10 rows before: 32 of 128, 25 %).
// fp16 / bf16 use tensor cores (ldmatrix + mma.sync m16n8k16, fp32 accumulate); fp32 runs on
// CUDA cores. The epilogue optionally folds eval BN + ReLU, or keeps the training BN statistics
// of the raw output while it is in registers (per-block partials, summed in a fixed order
// afterwards: deterministic).
// Reference: torch.nn.functional.conv2d (inception_fast/ops/csrc_reference.py: asym_conv; the
// tile maths are mirrored, and emulated on CPU, by csrc_reference.asym_conv_tiling).
#include "conv_tiles.cuh"

namespace ifast {
namespace {

constexpr int kMT = 128;           // output pixels (GEMM rows) per block
constexpr int kNT = 64;            // output channels per block
constexpr int kBK = 32;            // input channels per chunk
constexpr int kMaxTaps = 7;
constexpr int kMaxPaddedLine = 128;  // L + 2 * pad (API limit; one line per block at least)
constexpr int kARows = 152;        // staged rows: (lb - 1) * S + L + 2 * pad <= kARows
constexpr int kThreads = 128;
constexpr int kBStages = 3;        // weight tiles in flight: steps s, s + 1, s + 2
constexpr int kAStages = 2;        // line tiles: the chunk being multiplied and the next one

struct AsymGeom {
  int N, H, W, Ci, Co, taps, pad;
  bool vertical;
  bool vec_x, vec_w, vec_out;  // 16-byte accesses allowed (channel counts and pointers aligned)
  int L, Lo, S, lines, lb, rows;  // line length in / out, smem line stride, lines, lines/block,
                                  // staged A rows

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
  // Output pixel of GEMM row m (< lb * Lo, line in range) of the block starting at line0.
  __device__ __forceinline__ int64_t pixel(int line0, int m) const {
    const int j = m / Lo, v = m - j * Lo;
    return out_base(line0 + j) + (int64_t)v * step();
  }
  // Staged row of GEMM row m at tap 0 (padding rows read row 0: computed, never stored).
  __device__ __forceinline__ int a_row(int m) const {
    if (m >= lb * Lo) return 0;
    const int j = m / Lo;
    return j * S + (m - j * Lo);
  }
};

// Fill the A tile: rows [0, g.rows) x kBK channels of the block's lines (the zero gaps and
// lines past the end as zeros). ASYNC: 16-byte cp.async where the channels are vector-aligned.
template <typename T, int LD, bool ASYNC>
__device__ __forceinline__ void load_lines(T (*As)[LD], const T* __restrict__ x, const AsymGeom& g,
                                           int line0, int ci0, bool vec_ok) {
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kBK / V;  // vectors per row
  for (int i = threadIdx.x; i < g.rows * VPR; i += kThreads) {
    const int r = i / VPR, cv = (i % VPR) * V;
    const int j = r / g.S, pos = r - j * g.S - g.pad;
    const int line = line0 + j;
    const bool valid = j < g.lb && line < g.lines && pos >= 0 && pos < g.L;
    const T* row = valid ? x + (g.in_base(line) + (int64_t)pos * g.step()) * g.Ci + ci0 : x;
    if (ASYNC && vec_ok)
      stage_vec<T>(&As[r][cv], row, cv, g.Ci - ci0, valid, true, x);
    else if (valid)
      load_vec<T>(&As[r][cv], row, cv, g.Ci - ci0, vec_ok);
    else
      zero_vec<T>(&As[r][cv]);
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
    const T* row = w + ((int64_t)t * Ci + ci0 + k) * Co + co0;
    if (ASYNC && vec_ok)
      stage_vec<T>(&Bs[k][cv], row, cv, Co - co0, ci0 + k < Ci, true, w);
    else if (ci0 + k < Ci)
      load_vec<T>(&Bs[k][cv], row, cv, Co - co0, vec_ok);
    else
      zero_vec<T>(&Bs[k][cv]);
  }
}

/// Tensor-core path (fp16 / bf16): ldmatrix + mma.sync m16n8k16, fp32 accumulate.
/// Tile per block: 128 output pixels x 64 output channels; 4 warps as 2 x 2, warp tile 64 x 32
/// (4 x 4 m16n8 fragments, 64 fp32 registers). Per 32-channel chunk the block stages the line
/// tile once (<= 152 rows x 32 ch = 9.7 KB bf16; 143 rows at 17x17 / 7 taps) and one 32 x 64
/// weight tile per tap (4 KB, L2 hits: every block reads the same weights) and computes
/// 2 * 128 * 64 * 32 * taps FLOP (3.7 MFLOP at 7 taps): ~100 FLOP per staged byte, so the
/// ceiling aimed at is the mma.sync rate (~660 dense fp16/bf16 TFLOP/s on an H100 SXM), not
/// bandwidth; each k16 step issues 4 LDSM (A) + 2 LDSM.T (B) per 16 HMMA per warp. Shared rows
/// of 80 B (A) and 144 B (B) put 8 consecutive rows of an ldmatrix phase in distinct banks (a
/// phase straddling a line gap may meet a 2-way conflict). Operands arrive by cp.async in a
/// 3-stage pipeline over steps (chunk, tap): weights two steps ahead (3 B stages), the next
/// chunk's lines at least one tap ahead (2 A stages; needs taps >= 2), one barrier per step.
/// Epilogue: 16-byte stores through a shared C tile (conv_tiles.cuh).
template <typename T>
__global__ void __launch_bounds__(kThreads)
asym_conv_mma_kernel(const T* __restrict__ x, const T* __restrict__ w, AsymGeom g, Epilogue ep) {
  using Smem = MmaSmem<T, kAStages, kARows, kBStages, kMT, kNT, kBK>;
  constexpr int LDA = Smem::LDA, LDB = Smem::LDB;
  constexpr int MI = 4, NI = 4;  // the warp tile: 64 rows x 32 channels
  __shared__ __align__(16) Smem sm;
  auto& As = sm.As;
  auto& Bs = sm.Bs;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 2, wn = warp % 2;
  const int line0 = blockIdx.x * g.lb;
  const int co0 = blockIdx.y * kNT;

  uint32_t a_addr[MI];  // this lane's ldmatrix row of each m16 tile, tap 0, stage 0
#pragma unroll
  for (int i = 0; i < MI; ++i)
    a_addr[i] = smem_addr(&As[0][g.a_row(64 * wm + 16 * i + lane % 16)][8 * (lane / 16)]);

  float acc[MI][NI][4];
  zero_acc(acc);

  // Step s = (chunk, tap): its weights into B stage s % 3; at tap 0 the chunk's lines into A
  // stage chunk % 2 (free: the chunk two back finished at step s - taps - 1 <= s - 3).
  const int steps = ((g.Ci + kBK - 1) / kBK) * g.taps;
  auto issue = [&](int s) {
    const int c = s / g.taps, t = s - c * g.taps;
    if (t == 0) load_lines<T, LDA, true>(As[c % kAStages], x, g, line0, c * kBK, g.vec_x);
    load_weights<T, LDB, true>(Bs[s % kBStages], w, t, c * kBK, co0, g.Ci, g.Co, g.vec_w);
  };
  issue(0);
  cp_async_commit();
  if (steps > 1) issue(1);
  cp_async_commit();
  for (int s = 0; s < steps; ++s) {
    const int chunk = s / g.taps, t = s - chunk * g.taps;
    cp_async_wait<kBStages - 2>();  // this thread's step-s copies have landed
    // ... and everyone's are visible; everyone is done with step s - 1, whose B stage (and, at a
    // chunk start, the A stage of the chunk two back) the loads below overwrite.
    __syncthreads();
    if (s + 2 < steps) issue(s + 2);
    cp_async_commit();
    const uint32_t shift = (chunk % kAStages) * Smem::kAStageBytes + t * (LDA * sizeof(T));
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16)  // the tap = a shift of t rows of the line tile
      warp_mma_k16<T, MI, NI, LDB>(acc, a_addr, shift, Bs[s % kBStages], 32 * wn, kk, lane);
  }

  mma_epilogue<T, kThreads>(sm, ep, acc, lane, wm, wn, co0, g.Co,
                            min(g.lb, g.lines - line0) * g.Lo, g.vec_out,
                            [&](int m) { return g.pixel(line0, m); });
}

/// fp32 path on CUDA cores, same block tile and line staging (full-precision fp32 has no
/// tensor-core path). Same global traffic per tile as the tensor-core kernel at twice the bytes
/// per element; per k step a thread reads 16 A floats + one float4 of B from shared memory for
/// 64 FMA (1.6 FLOP per shared byte), so the ceiling aimed at is the FFMA rate (~60 TFLOP/s
/// fp32 on an H100), shared-memory reads just below it. Synchronous loads, two barriers per tap.
/// Thread (ty = tid / 16, tx = tid % 16) computes GEMM rows ty + 8 i (i < 16) x channels
/// 4 tx .. 4 tx + 3 and stores each row's 4 channels as one float4 (16 bytes) where aligned.
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

  int arow[RPT];
  float acc[RPT][4];
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    arow[i] = g.a_row(ty + 8 * i);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }

  for (int ci0 = 0; ci0 < g.Ci; ci0 += kBK) {
    __syncthreads();
    load_lines<float, LDA, false>(As, x, g, line0, ci0, g.vec_x);
    for (int t = 0; t < g.taps; ++t) {
      load_weights<float, LDB, false>(Bs, w, t, ci0, co0, g.Ci, g.Co, g.vec_w);
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kBK; ++k) {
        const float4 b = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
          const float a = As[arow[i] + t][k];
          acc[i][0] = fmaf(a, b.x, acc[i][0]);
          acc[i][1] = fmaf(a, b.y, acc[i][1]);
          acc[i][2] = fmaf(a, b.z, acc[i][2]);
          acc[i][3] = fmaf(a, b.w, acc[i][3]);
        }
      }
      __syncthreads();
    }
  }

  const int co = co0 + tx * 4;
  float sc[4] = {1.f, 1.f, 1.f, 1.f}, sh[4] = {0.f, 0.f, 0.f, 0.f};  // hoisted out of the rows
  if (ep.scale) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (co + j < g.Co) sc[j] = ep.scale[co + j], sh[j] = ep.shift[co + j];
  }
  const int valid_rows = min(g.lb, g.lines - line0) * g.Lo;
  float* out = static_cast<float*>(ep.out) + ep.out_off + co;
  float s[4] = {0.f, 0.f, 0.f, 0.f}, ss[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int m = ty + 8 * i;
    if (m >= valid_rows || co >= g.Co) continue;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool in = co + j < g.Co;
      s[j] += in ? acc[i][j] : 0.f;
      ss[j] += in ? acc[i][j] * acc[i][j] : 0.f;
      v[j] = ep.scale ? bn_relu(acc[i][j], sc[j], sh[j]) : acc[i][j];
    }
    float* dst = out + g.pixel(line0, m) * ep.out_c;
    if (g.vec_out && co + 4 <= g.Co) {
      *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (co + j < g.Co) dst[j] = v[j];
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
    const int c = co0 + threadIdx.x;
    if (threadIdx.x < kNT && c < g.Co) {
      float a = 0.f, b = 0.f;
#pragma unroll
      for (int wi = 0; wi < kThreads / 32; ++wi) {
        a += red[wi][0][threadIdx.x];
        b += red[wi][1][threadIdx.x];
      }
      ep.part[(int64_t)blockIdx.x * g.Co + c] = a;
      ep.part[((int64_t)gridDim.x + blockIdx.x) * g.Co + c] = b;
    }
  }
}

// The block geometry (csrc_reference.asym_conv_tiling mirrors it); false if unsupported.
bool asym_geometry(AsymGeom& g, int N, int H, int W, int taps, int pad, bool vertical) {
  g.N = N; g.H = H; g.W = W; g.taps = taps; g.pad = pad; g.vertical = vertical;
  g.L = vertical ? H : W;
  g.Lo = g.L + 2 * pad - taps + 1;
  g.S = g.L + pad;
  g.lines = vertical ? N * W : N * H;
  if (taps < 2 || taps > kMaxTaps || pad < 0 || g.L + 2 * pad > kMaxPaddedLine || g.Lo < 1)
    return false;
  const int by_rows = kMT / g.Lo, by_smem = (kARows - g.L - 2 * pad) / g.S + 1;
  g.lb = by_rows < by_smem ? by_rows : by_smem;
  g.rows = (g.lb - 1) * g.S + g.L + 2 * pad;
  return true;
}

}  // namespace

int64_t asym_conv_row_blocks(int N, int H, int W, int taps, int pad, bool vertical) {
  AsymGeom g;
  if (!asym_geometry(g, N, H, W, taps, pad, vertical)) return 0;
  return ((int64_t)g.lines + g.lb - 1) / g.lb;
}

int asym_conv_max_padded_line() { return kMaxPaddedLine; }
int asym_conv_max_taps() { return kMaxTaps; }

cudaError_t launch_asym_conv(DType dt, const void* x, const void* w_packed, int N, int H, int W,
                             int Ci, int Co, int taps, int pad, bool vertical, Epilogue ep,
                             cudaStream_t stream) {
  AsymGeom g;
  if (!asym_geometry(g, N, H, W, taps, pad, vertical)) return cudaErrorInvalidValue;
  g.Ci = Ci; g.Co = Co;
  const int V = dt == DType::F32 ? 4 : 8;
  g.vec_x = Ci % V == 0 && aligned_to(x, 16);
  g.vec_w = Co % V == 0 && aligned_to(w_packed, 16);
  g.vec_out = dt == DType::F32 ? out_vec_ok<float>(ep) : out_vec_ok<__half>(ep);
  if (g.lines == 0 || Co == 0) return cudaSuccess;
  if (ep.sum && !ep.part) return cudaErrorInvalidValue;  // statistics go through partials
  dim3 grid((g.lines + g.lb - 1) / g.lb, (Co + kNT - 1) / kNT);
  switch (dt) {
    case DType::F32:
      asym_conv_f32_kernel<<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(x), static_cast<const float*>(w_packed), g, ep);
      break;
    case DType::F16:
      asym_conv_mma_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(w_packed), g, ep);
      break;
    case DType::BF16:
      asym_conv_mma_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w_packed), g,
          ep);
      break;
  }
  cudaError_t e = launch_status();
  if (e == cudaSuccess && ep.sum)
    e = launch_reduce_partials(ep.part, grid.x, Co, ep.sum, ep.sumsq, stream);
  return e;
}

}  // namespace ifast
