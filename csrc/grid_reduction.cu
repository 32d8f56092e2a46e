// Fused grid reduction of Inception-v3 (Mixed_6a = torchvision InceptionB, Mixed_7a = InceptionD).
//
// Mixed_6a's branch3x3 (3x3 / stride 2 / no padding conv) and its max-pool (3x3 / stride 2) read
// exactly the same input windows. grid_reduce_wmma_kernel is an implicit-GEMM conv (64 output
// pixels x 64 output channels per block, K = 9 taps x 32-channel chunks, tensor cores, fp32
// accumulate) whose A-tile loads also feed the pool: while a 32-channel chunk is streamed tap by
// tap, each thread keeps the running max (and winning tap) of the values it loaded, so the pool
// costs no extra read of the input. The chunks' pool work is spread over the blocks that share a
// pixel tile (chunk k -> output-channel block k mod gridDim.y). The conv result goes through the
// shared conv epilogue (raw output + BN statistics for training, or BN + ReLU folded for eval)
// into its channel slice; the pool writes its slice of the same NHWC block output, plus argmax.
// Mixed_7a's pool reads the block input while its stride-2 convs read intermediate tensors:
// there the pool runs alone (maxpool3s2_kernel) into its slice and the convs write theirs.
// Backward: maxpool3s2_bwd_kernel routes each output gradient to its argmax (a gather: every
// input element sums the <= 4 windows that contain it, no atomics).
// Reference: F.conv2d + F.max_pool2d (inception_fast/ops/csrc_reference.py).
#include <mma.h>

#include "conv_tiles.cuh"

namespace ifast {
namespace {

constexpr int kMT = 64;   // output pixels per block
constexpr int kNT = 64;   // output channels per block
constexpr int kBK = 32;   // input channels per chunk
constexpr int kThreads = 128;

struct GridGeom {
  int N, H, W, Ci, Co, OH, OW;
  int64_t M;  // N * OH * OW output pixels
  bool vec_x, vec_w;
};

/// Implicit-GEMM 3x3/2 conv + (optionally) the 3x3/2 max-pool of the same windows. fp16/bf16.
template <typename T>
__global__ void __launch_bounds__(kThreads)
grid_reduce_wmma_kernel(const T* __restrict__ x, const T* __restrict__ w, GridGeom g, Epilogue ep,
                        T* __restrict__ pool, int pool_c, int pool_off, uint8_t* __restrict__ argmax) {
  using namespace nvcuda;
  constexpr int LDA = kBK + 16;  // 96-byte rows (wmma wants 32-byte aligned tile starts)
  constexpr int LDB = kNT + 16;
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kBK / V;                  // 16-byte vectors per A row
  constexpr int PER = kMT * VPR / kThreads;     // A vectors per thread
  __shared__ __align__(32) T As[kMT][LDA];
  __shared__ __align__(32) T Bs[kBK][LDB];
  __shared__ __align__(32) float St[kThreads / 32][16 * 16];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t m0 = (int64_t)blockIdx.x * kMT;
  const int co0 = blockIdx.y * kNT;

  // This thread's A-tile slots (same pixels and channel offsets for every tap and chunk, which
  // is what lets it keep the pool's running max in registers).
  int row[PER], cv[PER];
  int64_t win[PER];  // input pixel index of the window's top-left corner, -1 past the end
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    const int i = threadIdx.x + s * kThreads;
    row[s] = i / VPR;
    cv[s] = (i % VPR) * V;
    const int64_t m = m0 + row[s];
    if (m < g.M) {
      const int64_t n = m / ((int64_t)g.OH * g.OW);
      const int r = (int)(m - n * g.OH * g.OW);
      const int oh = r / g.OW, ow = r % g.OW;
      win[s] = (n * g.H + 2 * oh) * g.W + 2 * ow;
    } else {
      win[s] = -1;
    }
  }

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMT / 16];
#pragma unroll
  for (int i = 0; i < kMT / 16; ++i) wmma::fill_fragment(acc[i], 0.f);

  const int nchunks = (g.Ci + kBK - 1) / kBK;
  for (int chunk = 0; chunk < nchunks; ++chunk) {
    const int ci0 = chunk * kBK;
    const bool pool_here = pool != nullptr && (chunk % gridDim.y) == blockIdx.y;
    float best[PER][V];
    uint8_t arg[PER][V];
#pragma unroll
    for (int s = 0; s < PER; ++s)
#pragma unroll
      for (int e = 0; e < V; ++e) {
        best[s][e] = -INFINITY;
        arg[s][e] = 0;
      }

    for (int t = 0; t < 9; ++t) {
      const int kh = t / 3, kw = t % 3;
      __syncthreads();  // the previous tap's tiles are no longer read
#pragma unroll
      for (int s = 0; s < PER; ++s) {
        uint4 raw = make_uint4(0, 0, 0, 0);
        T* vals = reinterpret_cast<T*>(&raw);
        if (win[s] >= 0) {
          const T* src = x + (win[s] + kh * g.W + kw) * g.Ci;
          load_vec<T>(vals, src, ci0 + cv[s], g.Ci, g.vec_x);
          if (pool_here) {
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const float v = to_f(vals[e]);
              if (pool_takes(v, best[s][e])) {
                best[s][e] = v;
                arg[s][e] = (uint8_t)t;
              }
            }
          }
        }
        *reinterpret_cast<uint4*>(&As[row[s]][cv[s]]) = raw;
      }
      // B tile: w_packed[t][ci0 .. ci0 + kBK][co0 .. co0 + kNT]
      for (int i = threadIdx.x; i < kBK * (kNT / V); i += kThreads) {
        const int k = i / (kNT / V), c = (i % (kNT / V)) * V;
        if (ci0 + k < g.Ci) {
          load_vec<T>(&Bs[k][c], w + ((int64_t)t * g.Ci + ci0 + k) * g.Co, co0 + c, g.Co, g.vec_w);
        } else {
          zero_vec<T>(&Bs[k][c]);
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(b, &Bs[kk][warp * 16], LDB);
#pragma unroll
        for (int i = 0; i < kMT / 16; ++i) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
          wmma::load_matrix_sync(a, &As[i * 16][kk], LDA);
          wmma::mma_sync(acc[i], a, b, acc[i]);
        }
      }
    }

    if (pool_here) {
#pragma unroll
      for (int s = 0; s < PER; ++s) {
        if (win[s] < 0) continue;
        const int64_t m = m0 + row[s];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const int c = ci0 + cv[s] + e;
          if (c < g.Ci) {
            pool[m * pool_c + pool_off + c] = from_f<T>(best[s][e]);  // exact: a T value
            argmax[m * g.Ci + c] = arg[s][e];
          }
        }
      }
    }
  }

  // Conv epilogue (see asym_conv.cu): lane -> channel lane % 16, rows 8 * (lane / 16) .. + 8.
  const int c = lane % 16, rh = lane / 16;
  const int co = co0 + warp * 16 + c;
  float s = 0.f, ss = 0.f;
#pragma unroll
  for (int i = 0; i < kMT / 16; ++i) {
    wmma::store_matrix_sync(St[warp], acc[i], 16, wmma::mem_row_major);
    __syncwarp();
    if (co < g.Co) {
      for (int rr = 0; rr < 8; ++rr) {
        const int r = rh * 8 + rr;
        const int64_t m = m0 + i * 16 + r;
        if (m < g.M) epilogue_store<T>(ep, m, co, St[warp][r * 16 + c], s, ss);
      }
    }
    __syncwarp();
  }
  epilogue_stats_16(ep, lane, co, g.Co, s, ss);
}

/// Max-pool 3x3 / stride 2 alone (Mixed_7a's pool branch), any dtype: one thread per output
/// element, channels fastest (coalesced), into a channel slice, with the winning tap.
template <typename T>
__global__ void maxpool3s2_kernel(const T* __restrict__ x, int H, int W, int C, int OH, int OW,
                                  int64_t total, T* __restrict__ pool, int pool_c, int pool_off,
                                  uint8_t* __restrict__ argmax) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % C);
    const int64_t m = i / C;
    const int ow = (int)(m % OW);
    const int oh = (int)((m / OW) % OH);
    const int64_t n = m / ((int64_t)OW * OH);
    const T* src = x + ((n * H + 2 * oh) * W + 2 * ow) * C + c;
    float best = -INFINITY;
    int arg = 0;
#pragma unroll
    for (int t = 0; t < 9; ++t) {
      const float v = to_f(src[((t / 3) * W + (t % 3)) * (int64_t)C]);
      if (pool_takes(v, best)) {
        best = v;
        arg = t;
      }
    }
    pool[m * pool_c + pool_off + c] = from_f<T>(best);
    argmax[i] = (uint8_t)arg;
  }
}

/// Max-pool 3x3/2 backward as a gather: input (h, w) lies in windows oh in
/// [ceil((h - 2) / 2), floor(h / 2)] (same for w); it receives g of those whose argmax it is.
template <typename T>
__global__ void maxpool3s2_bwd_kernel(const T* __restrict__ g, int g_c, int g_off,
                                      const uint8_t* __restrict__ argmax, T* __restrict__ dx,
                                      int H, int W, int C, int OH, int OW, int64_t total,
                                      bool accumulate) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % C);
    const int64_t p = i / C;
    const int w = (int)(p % W);
    const int h = (int)((p / W) % H);
    const int64_t n = p / ((int64_t)W * H);
    const int oh0 = h > 0 ? (h - 1) / 2 : 0, oh1 = min(h / 2, OH - 1);
    const int ow0 = w > 0 ? (w - 1) / 2 : 0, ow1 = min(w / 2, OW - 1);
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh) {
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int64_t m = (n * OH + oh) * OW + ow;
        if (argmax[m * C + c] == (h - 2 * oh) * 3 + (w - 2 * ow)) acc += to_f(g[m * g_c + g_off + c]);
      }
    }
    dx[i] = from_f<T>(accumulate ? to_f(dx[i]) + acc : acc);
  }
}

int elementwise_blocks(int64_t total) {
  const int64_t b = (total + 255) / 256;
  return (int)(b < 8192 ? (b > 0 ? b : 1) : 8192);
}

}  // namespace

cudaError_t launch_grid_reduce(DType dt, const void* x, const void* w_packed, int N, int H, int W,
                               int Ci, int Co, Epilogue conv_ep, void* pool, int pool_c,
                               int pool_off, uint8_t* argmax, cudaStream_t stream) {
  if (H < 3 || W < 3) return cudaErrorInvalidValue;
  const int OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  const int64_t M = (int64_t)N * OH * OW;
  if (M == 0) return cudaSuccess;
  if (w_packed == nullptr) {  // pool only
    if (pool == nullptr) return cudaErrorInvalidValue;
    const int64_t total = M * Ci;
    IFAST_DISPATCH_ALL(dt, maxpool3s2_kernel<T><<<elementwise_blocks(total), 256, 0, stream>>>(
                               static_cast<const T*>(x), H, W, Ci, OH, OW, total,
                               static_cast<T*>(pool), pool_c, pool_off, argmax));
    return launch_status();
  }
  GridGeom g{N, H, W, Ci, Co, OH, OW, M, false, false};
  g.vec_x = Ci % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  g.vec_w = Co % 8 == 0 && reinterpret_cast<uintptr_t>(w_packed) % 16 == 0;
  dim3 grid((unsigned)((M + kMT - 1) / kMT), (Co + kNT - 1) / kNT);
  switch (dt) {
    case DType::F16:
      grid_reduce_wmma_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(w_packed), g, conv_ep,
          static_cast<__half*>(pool), pool_c, pool_off, argmax);
      break;
    case DType::BF16:
      grid_reduce_wmma_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w_packed), g,
          conv_ep, static_cast<__nv_bfloat16*>(pool), pool_c, pool_off, argmax);
      break;
    default:
      return cudaErrorInvalidValue;  // the fused conv is tensor-core only
  }
  return launch_status();
}

cudaError_t launch_maxpool_bwd(DType dt, const void* g, int g_c, int g_off, const uint8_t* argmax,
                               void* dx, int N, int H, int W, int C, bool accumulate,
                               cudaStream_t stream) {
  if (H < 3 || W < 3) return cudaErrorInvalidValue;
  const int OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  const int64_t total = (int64_t)N * H * W * C;
  if (total == 0) return cudaSuccess;
  IFAST_DISPATCH_ALL(dt, maxpool3s2_bwd_kernel<T><<<elementwise_blocks(total), 256, 0, stream>>>(
                             static_cast<const T*>(g), g_c, g_off, argmax, static_cast<T*>(dx), H,
                             W, C, OH, OW, total, accumulate));
  return launch_status();
}

}  // namespace ifast
