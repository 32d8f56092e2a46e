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
// computed but not stored. fp16 / bf16 use tensor cores (wmma 16x16x16, fp32 accumulate);
// fp32 runs on CUDA cores. The epilogue optionally folds eval BN + ReLU, or accumulates the
// training BN statistics of the raw output while it is in registers.
// Reference: torch.nn.functional.conv2d (inception_fast/ops/csrc_reference.py: asym_conv).
#include <mma.h>

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

// Fill the A tile: kARows rows x kBK channels of the padded lines of this block.
template <typename T, int LD>
__device__ __forceinline__ void load_lines(T (*As)[LD], const T* __restrict__ x, const AsymGeom& g,
                                           int line0, int ci0, bool vec_ok) {
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kBK / V;  // vectors per row
  for (int i = threadIdx.x; i < kARows * VPR; i += kThreads) {
    const int r = i / VPR, cv = (i % VPR) * V;
    const int j = r / g.Lp, pos = r % g.Lp - g.pad;
    const int line = line0 + j;
    if (j < g.lb && line < g.lines && pos >= 0 && pos < g.L) {
      const T* row = x + (g.in_base(line) + (int64_t)pos * g.step()) * g.Ci;
      load_vec<T>(&As[r][cv], row, ci0 + cv, g.Ci, vec_ok);
    } else {
      zero_vec<T>(&As[r][cv]);
    }
  }
}

// Fill the B tile of tap t: kBK input channels x kNT output channels of w_packed [taps][Ci][Co].
template <typename T, int LD>
__device__ __forceinline__ void load_weights(T (*Bs)[LD], const T* __restrict__ w, int t, int ci0,
                                             int co0, int Ci, int Co, bool vec_ok) {
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kNT / V;
  for (int i = threadIdx.x; i < kBK * VPR; i += kThreads) {
    const int k = i / VPR, cv = (i % VPR) * V;
    if (ci0 + k < Ci) {
      load_vec<T>(&Bs[k][cv], w + ((int64_t)t * Ci + ci0 + k) * Co, co0 + cv, Co, vec_ok);
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

/// Tensor-core path (fp16 / bf16). 4 warps; warp w owns output channels [16w, 16w + 16) of the
/// block's 64 and all 8 row tiles of 16 virtual rows.
template <typename T>
__global__ void __launch_bounds__(kThreads)
asym_conv_wmma_kernel(const T* __restrict__ x, const T* __restrict__ w, AsymGeom g, Epilogue ep) {
  using namespace nvcuda;
  constexpr int LDA = kBK + 16;  // 96-byte rows: every row start is 32-byte aligned for wmma
  constexpr int LDB = kNT + 16;  // 160-byte rows
  __shared__ __align__(32) T As[kARows][LDA];
  __shared__ __align__(32) T Bs[kBK][LDB];
  __shared__ __align__(32) float St[kThreads / 32][16 * 16];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int line0 = blockIdx.x * g.lb;
  const int co0 = blockIdx.y * kNT;
  const bool vec_x = g.vec_x, vec_w = g.vec_w;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMT / 16];
#pragma unroll
  for (int i = 0; i < kMT / 16; ++i) wmma::fill_fragment(acc[i], 0.f);

  for (int ci0 = 0; ci0 < g.Ci; ci0 += kBK) {
    __syncthreads();  // previous chunk's tiles are no longer read
    load_lines<T, LDA>(As, x, g, line0, ci0, vec_x);
    for (int t = 0; t < g.taps; ++t) {
      load_weights<T, LDB>(Bs, w, t, ci0, co0, g.Ci, g.Co, vec_w);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(b, &Bs[kk][warp * 16], LDB);
#pragma unroll
        for (int i = 0; i < kMT / 16; ++i) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
          wmma::load_matrix_sync(a, &As[i * 16 + t][kk], LDA);  // the tap = a row shift
          wmma::mma_sync(acc[i], a, b, acc[i]);
        }
      }
      __syncthreads();  // Bs is reloaded for the next tap
    }
  }

  // Epilogue: one 16x16 accumulator tile at a time through this warp's staging buffer.
  // Lane -> channel lane % 16, rows 8 * (lane / 16) .. + 8.
  const int c = lane % 16, rh = lane / 16;
  const int co = co0 + warp * 16 + c;
  float s = 0.f, ss = 0.f;
#pragma unroll
  for (int i = 0; i < kMT / 16; ++i) {
    wmma::store_matrix_sync(St[warp], acc[i], 16, wmma::mem_row_major);
    __syncwarp();
    if (co < g.Co) {
      for (int rr = 0; rr < 8; ++rr) {
        const int row = rh * 8 + rr;
        const int64_t pixel = virtual_row_pixel(g, line0, i * 16 + row);
        if (pixel >= 0) epilogue_store<T>(ep, pixel, co, St[warp][row * 16 + c], s, ss);
      }
    }
    __syncwarp();
  }
  epilogue_stats_16(ep, lane, co, g.Co, s, ss);
}

/// fp32 path on CUDA cores, same tiling. Thread (ty = tid / 16, tx = tid % 16) computes rows
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
    load_lines<float, LDA>(As, x, g, line0, ci0, vec_x);
    for (int t = 0; t < g.taps; ++t) {
      load_weights<float, LDB>(Bs, w, t, ci0, co0, g.Ci, g.Co, vec_w);
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
  if (ep.sum) {
    // Lanes tx and tx + 16 of a warp share channels; one fp64 atomic per warp and channel.
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s[j] += __shfl_xor_sync(0xffffffffu, s[j], 16);
      ss[j] += __shfl_xor_sync(0xffffffffu, ss[j], 16);
      const int co = co0 + tx * 4 + j;
      if ((threadIdx.x % 32) < 16 && co < g.Co) {
        atomicAdd(ep.sum + co, (double)s[j]);
        atomicAdd(ep.sumsq + co, (double)ss[j]);
      }
    }
  }
}

}  // namespace

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
  dim3 grid((g.lines + g.lb - 1) / g.lb, (Co + kNT - 1) / kNT);
  switch (dt) {
    case DType::F32:
      asym_conv_f32_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(x),
                                                          static_cast<const float*>(w_packed), g, ep);
      break;
    case DType::F16:
      asym_conv_wmma_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(w_packed), g, ep);
      break;
    case DType::BF16:
      asym_conv_wmma_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w_packed), g, ep);
      break;
  }
  return launch_status();
}

}  // namespace ifast
