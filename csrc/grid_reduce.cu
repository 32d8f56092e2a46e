// Fused grid reduction of Inception-v3's Mixed_6a (torchvision InceptionB): the branch3x3 conv
// (3x3 / stride 2 / no padding) and the max-pool (3x3 / stride 2) read exactly the same input
// windows. grid_reduce_mma_kernel is an implicit-GEMM conv (128 output pixels x 64 output
// channels per block, K = 9 taps x 32-channel chunks, tensor cores through ldmatrix + mma.sync,
// fp32 accumulate) whose staged A tiles also feed the pool: once a tap's tile has landed in
// shared memory, each thread folds the vectors it copied itself into a running max (and winning
// tap), so the pool costs no extra read of the input. The chunks' pool work is spread over the
// blocks that share a pixel tile (chunk k -> output-channel block k mod gridDim.y). The conv
// result goes through the shared conv epilogue (raw output + BN statistics for training, or
// BN + ReLU folded for eval) into its channel slice; the pool writes its slice of the same NHWC
// block output, plus argmax. Mixed_7a's pool (the pool alone) and the pool backward are in
// maxpool.cu. Reference: F.conv2d + F.max_pool2d (inception_fast/ops/csrc_reference.py; the
// tile maths are emulated on CPU by csrc_reference.grid_reduce_tiling).
#include "conv_tiles.cuh"

namespace ifast {
namespace {

constexpr int kMT = 128;  // output pixels per block
constexpr int kNT = 64;   // output channels per block
constexpr int kBK = 32;   // input channels per chunk
constexpr int kThreads = 128;
constexpr int kStages = 3;  // steps (chunk, tap) in flight: s, s + 1, s + 2

struct GridGeom {
  int N, H, W, Ci, Co, OH, OW;
  int64_t M;  // N * OH * OW output pixels
  bool vec_x, vec_w, vec_out, vec_pool;
};

// The pool work of chunk k is done by the blocks with blockIdx.y == k mod gridDim.y.
__device__ __forceinline__ bool pool_in_block(const void* pool, int chunk) {
  return pool != nullptr && (chunk % (int)gridDim.y) == (int)blockIdx.y;
}

// The pool's running max of a slot's V channels is kept as V values of T in one uint4 (exact:
// a max of T values is a T value; half the registers of fp32), the winning taps (0..8) as 4-bit
// fields of one word.
template <typename T, int PER>
__device__ __forceinline__ void reset_pool(uint4 (&best)[PER], uint32_t (&arg)[PER]) {
  static_assert(16 / sizeof(T) <= 8, "4-bit tap fields in one 32-bit word");
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    arg[s] = 0;
    T* b = reinterpret_cast<T*>(&best[s]);
#pragma unroll
    for (int e = 0; e < 16 / (int)sizeof(T); ++e) b[e] = from_f<T>(-INFINITY);
  }
}

// Fold this thread's own slots of a landed A stage into the running max (torch's rule: NaN
// wins, first maximum kept). Slot s: row tid / VPR + s * (kThreads / VPR), channels cv.
template <typename T, int PER, int LDA>
__device__ __forceinline__ void fold_pool(const T (*As)[LDA], const int64_t (&win)[PER], int cv,
                                          int t, uint4 (&best)[PER], uint32_t (&arg)[PER]) {
  constexpr int V = 16 / sizeof(T), VPR = kBK / V;
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    if (win[s] < 0) continue;
    const int row = threadIdx.x / VPR + s * (kThreads / VPR);
    const uint4 raw = *reinterpret_cast<const uint4*>(&As[row][cv]);
    const T* vals = reinterpret_cast<const T*>(&raw);
    T* b = reinterpret_cast<T*>(&best[s]);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (pool_takes(to_f(vals[e]), to_f(b[e]))) {
        b[e] = vals[e];
        arg[s] = (arg[s] & ~(0xFu << (4 * e))) | ((uint32_t)t << (4 * e));
      }
    }
  }
}

// The finished pool of one chunk: values (exact: T values) into their slice, taps into argmax;
// one 16-byte value store and one 8-byte argmax store per slot where the slices allow it.
template <typename T, int PER>
__device__ __forceinline__ void store_pool(const uint4 (&best)[PER], const uint32_t (&arg)[PER],
                                           T* __restrict__ pool, int pool_c, int pool_off,
                                           uint8_t* __restrict__ argmax, const GridGeom& g,
                                           int64_t m0, const int64_t (&win)[PER], int cv, int ci0) {
  constexpr int V = 16 / sizeof(T), VPR = kBK / V;
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    if (win[s] < 0) continue;
    const int64_t m = m0 + threadIdx.x / VPR + s * (kThreads / VPR);
    const int c = ci0 + cv;
    T* pdst = pool + m * pool_c + pool_off + c;
    uint8_t* adst = argmax + m * g.Ci + c;
    uint8_t a[V];
#pragma unroll
    for (int e = 0; e < V; ++e) a[e] = (uint8_t)((arg[s] >> (4 * e)) & 0xFu);
    if (g.vec_pool && c + V <= g.Ci) {
      *reinterpret_cast<uint4*>(pdst) = best[s];
      store_bytes<V>(adst, a);
    } else {
      const T* b = reinterpret_cast<const T*>(&best[s]);
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (c + e < g.Ci) pdst[e] = b[e], adst[e] = a[e];
    }
  }
}

/// Implicit-GEMM 3x3/2 conv + (optionally) the 3x3/2 max-pool of the same windows. fp16/bf16.
/// 4 warps as 2 x 2, warp tile 64 pixels x 32 channels (4 x 4 m16n8 fragments, 64 fp32
/// registers). Per step (tap, 32-channel chunk) the block stages a 128 x 32 A tile (8 KB bf16:
/// 9 shifted reads of windows that overlap, mostly L2 hits) and a 32 x 64 weight tile (4 KB)
/// for 2 * 128 * 64 * 32 = 524 kFLOP: 43 FLOP per staged byte, so the ceiling aimed at is the
/// L2 -> SM staging rate (~10 TB/s on an H100: ~400 TFLOP/s), below the mma.sync rate; each
/// k16 step issues 4 LDSM (A) + 2 LDSM.T (B) per 16 HMMA per warp, conflict-free (80 B / 144 B
/// shared rows). Both tiles come by cp.async in a 3-stage pipeline (two steps in flight, one
/// barrier per step). Epilogue: 16-byte stores through a shared C tile (conv_tiles.cuh).
template <typename T>
__global__ void __launch_bounds__(kThreads, 4)  // <= 128 registers: 4 blocks (16 warps) per SM
grid_reduce_mma_kernel(const T* __restrict__ x, const T* __restrict__ w, GridGeom g, Epilogue ep,
                       T* __restrict__ pool, int pool_c, int pool_off,
                       uint8_t* __restrict__ argmax) {
  using Smem = MmaSmem<T, kStages, kMT, kStages, kMT, kNT, kBK>;
  constexpr int LDA = Smem::LDA, LDB = Smem::LDB;
  constexpr int MI = 4, NI = 4;
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kBK / V;               // 16-byte vectors per A row
  constexpr int PER = kMT * VPR / kThreads;  // A vectors per thread
  __shared__ __align__(16) Smem sm;
  auto& As = sm.As;
  auto& Bs = sm.Bs;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 2, wn = warp % 2;
  const int64_t m0 = (int64_t)blockIdx.x * kMT;
  const int co0 = blockIdx.y * kNT;

  // This thread's A-tile slots (same pixels and channel offset for every tap and chunk, which
  // is what lets it keep the pool's running max in registers).
  const int cv = (threadIdx.x % VPR) * V;
  int64_t win[PER];  // input pixel index of the window's top-left corner, -1 past the end
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    const int64_t m = m0 + threadIdx.x / VPR + s * (kThreads / VPR);
    if (m < g.M) {
      const int64_t n = m / ((int64_t)g.OH * g.OW);
      const int r = (int)(m - n * g.OH * g.OW);
      const int oh = r / g.OW, ow = r % g.OW;
      win[s] = (n * g.H + 2 * oh) * g.W + 2 * ow;
    } else {
      win[s] = -1;
    }
  }
  uint32_t a_addr[MI];
#pragma unroll
  for (int i = 0; i < MI; ++i)
    a_addr[i] = smem_addr(&As[0][64 * wm + 16 * i + lane % 16][8 * (lane / 16)]);

  // Step s = (chunk, tap): both tiles into stage s % 3 (free: step s - 3 is done by everyone).
  auto issue = [&](int s) {
    const int c = s / 9, t = s - 9 * c, ci0 = c * kBK;
    const int64_t shift = (t / 3) * g.W + t % 3;
#pragma unroll
    for (int k = 0; k < PER; ++k)
      stage_vec<T>(&As[s % kStages][threadIdx.x / VPR + k * (kThreads / VPR)][cv],
                   win[k] >= 0 ? x + (win[k] + shift) * g.Ci + ci0 : x, cv, g.Ci - ci0,
                   win[k] >= 0, g.vec_x, x);
    for (int i = threadIdx.x; i < kBK * (kNT / V); i += kThreads) {
      const int k = i / (kNT / V), c8 = (i % (kNT / V)) * V;
      const T* row = w + ((int64_t)t * g.Ci + ci0 + k) * g.Co + co0;
      stage_vec<T>(&Bs[s % kStages][k][c8], row, c8, g.Co - co0, ci0 + k < g.Ci, g.vec_w, w);
    }
  };

  float acc[MI][NI][4];
  zero_acc(acc);
  uint4 best[PER];  // the pool of the chunk being multiplied: running max and winning taps
  uint32_t arg[PER];
  reset_pool<T, PER>(best, arg);
  const int steps = ((g.Ci + kBK - 1) / kBK) * 9;
  issue(0);
  cp_async_commit();
  issue(1);
  cp_async_commit();
  for (int s = 0; s < steps; ++s) {
    const int chunk = s / 9, t = s - 9 * chunk;
    cp_async_wait<kStages - 2>();  // this thread's step-s copies have landed
    const bool pool_here = pool_in_block(pool, chunk);
    if (pool_here) fold_pool<T, PER, LDA>(As[s % kStages], win, cv, t, best, arg);  // own slots
    // Everyone's step-s tiles are visible; everyone is done with step s - 1, whose stage the
    // loads below overwrite.
    __syncthreads();
    if (s + 2 < steps) issue(s + 2);
    cp_async_commit();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16)
      warp_mma_k16<T, MI, NI, LDB>(acc, a_addr, (s % kStages) * Smem::kAStageBytes,
                                   Bs[s % kStages], 32 * wn, kk, lane);
    if (t == 8) {  // every tap of `chunk` is folded: its pool is complete
      if (pool_here)
        store_pool<T, PER>(best, arg, pool, pool_c, pool_off, argmax, g, m0, win, cv,
                           chunk * kBK);
      reset_pool<T, PER>(best, arg);
    }
  }

  mma_epilogue<T, kThreads>(sm, ep, acc, lane, wm, wn, co0, g.Co,
                            (int)min((int64_t)kMT, g.M - m0), g.vec_out,
                            [&](int row) { return m0 + row; });
}

}  // namespace

cudaError_t launch_grid_reduce(DType dt, const void* x, const void* w_packed, int N, int H, int W,
                               int Ci, int Co, Epilogue conv_ep, void* pool, int pool_c,
                               int pool_off, uint8_t* argmax, cudaStream_t stream) {
  if (H < 3 || W < 3) return cudaErrorInvalidValue;
  const int OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  const int64_t M = (int64_t)N * OH * OW;
  if (M == 0) return cudaSuccess;
  if (w_packed == nullptr)  // pool only
    return launch_maxpool3s2(dt, x, N, H, W, Ci, pool, pool_c, pool_off, argmax, stream);
  if (conv_ep.sum && !conv_ep.part) return cudaErrorInvalidValue;  // statistics via partials
  GridGeom g{N, H, W, Ci, Co, OH, OW, M, false, false, false, false};
  g.vec_x = Ci % 8 == 0 && aligned_to(x, 16);
  g.vec_w = Co % 8 == 0 && aligned_to(w_packed, 16);
  g.vec_out = out_vec_ok<__half>(conv_ep);
  g.vec_pool = pool != nullptr && Ci % 8 == 0 && pool_c % 8 == 0 && pool_off % 8 == 0 &&
               aligned_to(pool, 16) && aligned_to(argmax, 8);
  dim3 grid((unsigned)((M + kMT - 1) / kMT), (Co + kNT - 1) / kNT);
  switch (dt) {
    case DType::F16:
      grid_reduce_mma_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(w_packed), g, conv_ep,
          static_cast<__half*>(pool), pool_c, pool_off, argmax);
      break;
    case DType::BF16:
      grid_reduce_mma_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w_packed), g,
          conv_ep, static_cast<__nv_bfloat16*>(pool), pool_c, pool_off, argmax);
      break;
    default:
      return cudaErrorInvalidValue;  // the fused conv is tensor-core only
  }
  cudaError_t e = launch_status();
  if (e == cudaSuccess && conv_ep.sum)
    e = launch_reduce_partials(conv_ep.part, grid.x, Co, conv_ep.sum, conv_ep.sumsq, stream);
  return e;
}

int64_t grid_reduce_row_blocks(int N, int H, int W) {
  if (H < 3 || W < 3) return 0;
  const int64_t M = (int64_t)N * ((H - 3) / 2 + 1) * ((W - 3) / 2 + 1);
  return (M + kMT - 1) / kMT;
}

}  // namespace ifast
