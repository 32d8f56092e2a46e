// Fused grid reduction of Inception-v3 (Mixed_6a = torchvision InceptionB, Mixed_7a = InceptionD).
//
// Mixed_6a's branch3x3 (3x3 / stride 2 / no padding conv) and its max-pool (3x3 / stride 2) read
// exactly the same input windows. grid_reduce_mma_kernel is an implicit-GEMM conv (64 output
// pixels x 64 output channels per block, K = 9 taps x 32-channel chunks, tensor cores through
// ldmatrix + mma.sync, fp32 accumulate) whose A-tile loads also feed the pool: while a
// 32-channel chunk is streamed tap by tap, each thread keeps the running max (and winning tap)
// of the values it loaded, so the pool costs no extra read of the input. The chunks' pool work
// is spread over the blocks that share a pixel tile (chunk k -> output-channel block k mod
// gridDim.y). The conv result goes through the
// shared conv epilogue (raw output + BN statistics for training, or BN + ReLU folded for eval)
// into its channel slice; the pool writes its slice of the same NHWC block output, plus argmax.
// Mixed_7a's pool reads the block input while its stride-2 convs read intermediate tensors:
// there the pool runs alone (maxpool3s2_kernel) into its slice and the convs write theirs.
// Backward: maxpool3s2_bwd_kernel routes each output gradient to its argmax (a gather: every
// input element sums the <= 4 windows that contain it, no atomics).
// The pool kernels are bandwidth-bound: 2-D grids (pixels x 16-byte channel vectors, one image
// row per block row, so no per-element 64-bit division), a vector of 8 (16-bit) or 4 (fp32)
// channels per thread when the channel counts and pointers allow it, else one channel: two
// entry points per kernel (`<name>_v16_kernel`, `<name>_kernel`) over one templated body, named
// apart rather than by a width template argument because the static report's known-failures
// list is whitespace-separated and a demangled "k<T, 8>" has a space.
// Reference: F.conv2d + F.max_pool2d (inception_fast/ops/csrc_reference.py).
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

// ---- the grid-reduction kernel's pipeline pieces -------------------------------------------

// The pool work of chunk k is done by the blocks with blockIdx.y == k mod gridDim.y.
__device__ __forceinline__ bool pool_in_block(const void* pool, int chunk) {
  return pool != nullptr && (chunk % (int)gridDim.y) == (int)blockIdx.y;
}

// arg: the winning taps (0..8) of a slot's V <= 8 channels as 4-bit fields of one word (16
// fewer registers than a byte each).
template <int PER, int V>
__device__ __forceinline__ void reset_pool(float (&best)[PER][V], uint32_t (&arg)[PER]) {
  static_assert(V <= 8, "4-bit tap fields in one 32-bit word");
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    arg[s] = 0;
#pragma unroll
    for (int e = 0; e < V; ++e) best[s][e] = -INFINITY;
  }
}

// This thread's A vectors of tap t, channels [ci0, ci0 + kBK), into registers (zeros outside).
template <typename T, int PER>
__device__ __forceinline__ void grid_load_a(uint4 (&raw)[PER], const T* __restrict__ x,
                                            const GridGeom& g, const int64_t (&win)[PER],
                                            const int (&cv)[PER], int ci0, int t) {
  const int kh = t / 3, kw = t - 3 * (t / 3);
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    raw[s] = make_uint4(0, 0, 0, 0);
    if (win[s] >= 0)
      load_vec<T>(reinterpret_cast<T*>(&raw[s]), x + (win[s] + kh * g.W + kw) * g.Ci, ci0 + cv[s],
                  g.Ci, g.vec_x);
  }
}

// Fold the loaded vectors into the pool's running max (torch's rule: NaN wins, first maximum
// kept) and store them into the A buffer.
template <typename T, int PER, int LDA>
__device__ __forceinline__ void grid_take_a(const uint4 (&raw)[PER], T (*As)[LDA],
                                            const int (&row)[PER], const int (&cv)[PER],
                                            const int64_t (&win)[PER], bool pool_here, int t,
                                            float (&best)[PER][16 / sizeof(T)],
                                            uint32_t (&arg)[PER]) {
  constexpr int V = 16 / sizeof(T);
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    if (pool_here && win[s] >= 0) {
      const T* vals = reinterpret_cast<const T*>(&raw[s]);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float v = to_f(vals[e]);
        if (pool_takes(v, best[s][e])) {
          best[s][e] = v;
          arg[s] = (arg[s] & ~(0xFu << (4 * e))) | ((uint32_t)t << (4 * e));
        }
      }
    }
    *reinterpret_cast<uint4*>(&As[row[s]][cv[s]]) = raw[s];
  }
}

// The weights of tap t, channels [ci0, ci0 + kBK) x [co0, co0 + kNT), by cp.async when the
// output channels are vector-aligned (zero-filled outside), else by plain loads.
template <typename T, int LDB>
__device__ __forceinline__ void grid_load_b(T (*Bs)[LDB], const T* __restrict__ w,
                                            const GridGeom& g, int t, int ci0, int co0) {
  constexpr int V = 16 / sizeof(T);
  for (int i = threadIdx.x; i < kBK * (kNT / V); i += kThreads) {
    const int k = i / (kNT / V), c = (i % (kNT / V)) * V;
    const T* src = w + ((int64_t)t * g.Ci + ci0 + k) * g.Co;
    if (g.vec_w) {
      const bool any = ci0 + k < g.Ci && co0 + c < g.Co;
      cp_async_16(&Bs[k][c], any ? src + co0 + c : w, any);
    } else if (ci0 + k < g.Ci) {
      load_vec<T>(&Bs[k][c], src, co0 + c, g.Co, false);
    } else {
      zero_vec<T>(&Bs[k][c]);
    }
  }
}

// The finished pool of one chunk: values (exact: T values) into their slice, taps into argmax.
template <typename T, int PER, int V>
__device__ __forceinline__ void store_pool(const float (&best)[PER][V],
                                           const uint32_t (&arg)[PER], T* __restrict__ pool,
                                           int pool_c, int pool_off, uint8_t* __restrict__ argmax,
                                           const GridGeom& g, int64_t m0, const int (&row)[PER],
                                           const int (&cv)[PER], const int64_t (&win)[PER],
                                           int ci0) {
#pragma unroll
  for (int s = 0; s < PER; ++s) {
    if (win[s] < 0) continue;
    const int64_t m = m0 + row[s];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const int c = ci0 + cv[s] + e;
      if (c < g.Ci) {
        pool[m * pool_c + pool_off + c] = from_f<T>(best[s][e]);
        argmax[m * g.Ci + c] = (uint8_t)((arg[s] >> (4 * e)) & 0xFu);
      }
    }
  }
}

/// Implicit-GEMM 3x3/2 conv + (optionally) the 3x3/2 max-pool of the same windows. fp16/bf16.
/// 4 warps as 2 x 2, warp tile 32 pixels x 32 channels (2 x 4 m16n8 fragments). Per tap and
/// 32-channel chunk the block stages a 64 x 32 A tile (4 KB bf16, 9 shifted reads of windows
/// that overlap, mostly L2 hits) and a 32 x 64 weight tile (4 KB) for 2 * 64 * 64 * 32 =
/// 262 kFLOP: 32 FLOP per staged byte, so the ceiling aimed at is the L2 -> SM staging rate
/// (~10 TB/s on H100: ~300 TFLOP/s), below the mma.sync rate; each k16 step issues 2 LDSM (A)
/// + 2 LDSM.T (B) per 8 HMMA, conflict-free (80 B / 144 B shared rows), in a 2-stage pipeline
/// (one barrier per tap). The pool costs no extra global read: it takes the max of the A
/// vectors this thread loads anyway.
template <typename T>
__global__ void __launch_bounds__(kThreads, 4)  // <= 128 registers: 4 blocks per SM
grid_reduce_mma_kernel(const T* __restrict__ x, const T* __restrict__ w, GridGeom g, Epilogue ep,
                       T* __restrict__ pool, int pool_c, int pool_off, uint8_t* __restrict__ argmax,
                       bool pair_ok) {
  constexpr int LDA = kBK + 8;  // 80-byte rows: ldmatrix rows 16-byte aligned, banks distinct
  constexpr int LDB = kNT + 8;  // 144-byte rows
  constexpr int MI = 2, NI = 4;
  constexpr int V = 16 / sizeof(T);
  constexpr int VPR = kBK / V;                  // 16-byte vectors per A row
  constexpr int PER = kMT * VPR / kThreads;     // A vectors per thread
  // Two stages: while step s = (chunk, tap) is multiplied, step s + 1's weights are in flight by
  // cp.async and its input vectors by plain loads into registers (the pool needs the values),
  // stored to the other A buffer after the MMAs.
  __shared__ __align__(16) T As[2][kMT][LDA];
  __shared__ __align__(16) T Bs[2][kBK][LDB];
  __shared__ float red[2][2][kNT];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 2, wn = warp % 2;
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

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  float best[PER][V];  // the pool of the chunk being loaded: running max and winning tap
  uint32_t arg[PER];
  reset_pool<PER, V>(best, arg);
  uint4 raw[PER];
  const int steps = ((g.Ci + kBK - 1) / kBK) * 9;
  grid_load_a<T, PER>(raw, x, g, win, cv, 0, 0);
  grid_take_a<T, PER, LDA>(raw, As[0], row, cv, win, pool_in_block(pool, 0), 0, best, arg);
  grid_load_b<T, LDB>(Bs[0], w, g, 0, 0, co0);
  cp_async_commit();
  for (int s = 0; s < steps; ++s) {
    const int chunk = s / 9;
    cp_async_wait_all();
    // Step s's tiles are now visible to every thread, and every thread is done with step
    // s - 1, whose buffers are refilled below.
    __syncthreads();
    const bool more = s + 1 < steps;
    const int c1 = (s + 1) / 9, t1 = s + 1 - c1 * 9;
    if (more) {
      grid_load_b<T, LDB>(Bs[(s + 1) % 2], w, g, t1, c1 * kBK, co0);
      cp_async_commit();
      grid_load_a<T, PER>(raw, x, g, win, cv, c1 * kBK, t1);
    }
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16)
      warp_mma_k16<T, MI, NI, LDA, LDB>(acc, As[s % 2], 32 * wm, Bs[s % 2], 32 * wn, kk, lane);
    if (!more || t1 == 0) {  // every tap of `chunk` is taken: its pool is complete
      if (pool_in_block(pool, chunk))
        store_pool<T, PER, V>(best, arg, pool, pool_c, pool_off, argmax, g, m0, row, cv, win,
                              chunk * kBK);
      reset_pool<PER, V>(best, arg);
    }
    if (more)
      grid_take_a<T, PER, LDA>(raw, As[(s + 1) % 2], row, cv, win, pool_in_block(pool, c1), t1,
                               best, arg);
  }

  // Conv epilogue straight from the fragments (rows g and g + 8 of each m16 tile).
  int64_t pix[MI][2];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t m = m0 + 32 * wm + 16 * i + lane / 4 + 8 * h;
      pix[i][h] = m < g.M ? m : -1;
    }
  float s[NI][2] = {}, ss[NI][2] = {};
  epilogue_fragments<T, MI, NI>(ep, acc, pix, co0 + 32 * wn, g.Co, pair_ok, lane, s, ss);
  if (ep.part) stats_partials<NI, 2, kNT>(ep, s, ss, lane, wm, 32 * wn, co0, g.Co, red);
}

/// Max-pool 3x3 / stride 2 alone (Mixed_7a's pool branch), any dtype, into a channel slice,
/// with the winning tap. Block row = one output row (n, oh); threads: x = channel vectors of
/// VW channels, y = output columns. Per output vector: 9 vector loads, 1 vector store and VW
/// argmax bytes: ~2.6 B read per B written, bandwidth-bound (ceiling: HBM, reads mostly L2 hits
/// as neighbouring windows share a row and a column).
template <typename T, int VW>
__device__ __forceinline__ void maxpool3s2_body(const T* __restrict__ x, int H, int W, int C,
                                                int OH, int OW, int rows, T* __restrict__ pool,
                                                int pool_c, int pool_off,
                                                uint8_t* __restrict__ argmax) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VW;
  if (c >= C) return;
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {  // r = n * OH + oh
    const int n = r / OH, oh = r - n * OH;
    const T* xrow = x + (int64_t)(n * H + 2 * oh) * W * C + c;
    for (int ow = threadIdx.y; ow < OW; ow += blockDim.y) {
      const T* src = xrow + (int64_t)(2 * ow) * C;
      float best[VW];
      uint8_t arg[VW];
#pragma unroll
      for (int e = 0; e < VW; ++e) best[e] = -INFINITY, arg[e] = 0;
#pragma unroll
      for (int t = 0; t < 9; ++t) {
        float v[VW];
        load_vals<T, VW>(src + (int64_t)((t / 3) * W + t % 3) * C, v);
#pragma unroll
        for (int e = 0; e < VW; ++e)
          if (pool_takes(v[e], best[e])) best[e] = v[e], arg[e] = (uint8_t)t;
      }
      const int64_t m = (int64_t)r * OW + ow;
      store_vals<T, VW>(pool + m * pool_c + pool_off + c, best);  // exact: T values
      store_bytes<VW>(argmax + m * C + c, arg);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(256)
maxpool3s2_kernel(const T* __restrict__ x, int H, int W, int C, int OH, int OW, int rows,
                  T* __restrict__ pool, int pool_c, int pool_off, uint8_t* __restrict__ argmax) {
  maxpool3s2_body<T, 1>(x, H, W, C, OH, OW, rows, pool, pool_c, pool_off, argmax);
}
template <typename T>
__global__ void __launch_bounds__(256)
maxpool3s2_v16_kernel(const T* __restrict__ x, int H, int W, int C, int OH, int OW, int rows,
                      T* __restrict__ pool, int pool_c, int pool_off,
                      uint8_t* __restrict__ argmax) {
  maxpool3s2_body<T, 16 / sizeof(T)>(x, H, W, C, OH, OW, rows, pool, pool_c, pool_off, argmax);
}

/// Max-pool 3x3/2 backward as a gather: input (h, w) lies in windows oh in
/// [ceil((h - 2) / 2), floor(h / 2)] (same for w); it receives g of those whose argmax it is.
/// Block row = one input row (n, h); threads: x = channel vectors, y = input columns. Per input
/// vector: <= 4 (argmax vector, gradient vector) pairs read, one vector written (read too when
/// accumulating): bandwidth-bound, no atomics, no 64-bit division.
template <typename T, int VW>
__device__ __forceinline__ void maxpool3s2_bwd_body(const T* __restrict__ g, int g_c, int g_off,
                                                    const uint8_t* __restrict__ argmax,
                                                    T* __restrict__ dx, int H, int W, int C, int OH,
                                                    int OW, int rows, bool accumulate) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * VW;
  if (c >= C) return;
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {  // r = n * H + h
    const int n = r / H, h = r - n * H;
    const int oh0 = h > 0 ? (h - 1) / 2 : 0, oh1 = min(h / 2, OH - 1);
    for (int w = threadIdx.y; w < W; w += blockDim.y) {
      const int ow0 = w > 0 ? (w - 1) / 2 : 0, ow1 = min(w / 2, OW - 1);
      float acc[VW];
#pragma unroll
      for (int e = 0; e < VW; ++e) acc[e] = 0.f;
      for (int oh = oh0; oh <= oh1; ++oh) {
        for (int ow = ow0; ow <= ow1; ++ow) {
          const int64_t m = (int64_t)(n * OH + oh) * OW + ow;
          const int tap = (h - 2 * oh) * 3 + (w - 2 * ow);
          uint8_t a[VW];
          float gv[VW];
          load_bytes<VW>(argmax + m * C + c, a);
          load_vals<T, VW>(g + m * g_c + g_off + c, gv);
#pragma unroll
          for (int e = 0; e < VW; ++e)
            if (a[e] == tap) acc[e] += gv[e];
        }
      }
      T* dst = dx + ((int64_t)r * W + w) * C + c;
      if (accumulate) {
        float old[VW];
        load_vals<T, VW>(dst, old);
#pragma unroll
        for (int e = 0; e < VW; ++e) acc[e] = old[e] + acc[e];
      }
      store_vals<T, VW>(dst, acc);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(256)
maxpool3s2_bwd_kernel(const T* __restrict__ g, int g_c, int g_off,
                      const uint8_t* __restrict__ argmax, T* __restrict__ dx, int H, int W, int C,
                      int OH, int OW, int rows, bool accumulate) {
  maxpool3s2_bwd_body<T, 1>(g, g_c, g_off, argmax, dx, H, W, C, OH, OW, rows, accumulate);
}
template <typename T>
__global__ void __launch_bounds__(256)
maxpool3s2_bwd_v16_kernel(const T* __restrict__ g, int g_c, int g_off,
                          const uint8_t* __restrict__ argmax, T* __restrict__ dx, int H, int W,
                          int C, int OH, int OW, int rows, bool accumulate) {
  maxpool3s2_bwd_body<T, 16 / sizeof(T)>(g, g_c, g_off, argmax, dx, H, W, C, OH, OW, rows,
                                         accumulate);
}

// 2-D grid of the pool kernels: x = channel vectors (up to 32 threads), y = rows.
struct PoolGrid {
  dim3 grid, block;
};
PoolGrid pool_grid(int nvec, int rows) {
  int bx = 1;
  while (bx < nvec && bx < 32) bx *= 2;
  PoolGrid p;
  p.block = dim3(bx, 256 / bx);
  p.grid = dim3((nvec + bx - 1) / bx, rows < 65535 ? rows : 65535);
  return p;
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
    const int rows = N * OH;
    IFAST_DISPATCH_ALL(dt, {
      constexpr int V = 16 / sizeof(T);
      const bool vec = Ci % V == 0 && pool_c % V == 0 && pool_off % V == 0 && aligned_to(x, 16) &&
                       aligned_to(pool, 16) && aligned_to(argmax, V);
      if (vec) {
        const PoolGrid pg = pool_grid(Ci / V, rows);
        maxpool3s2_v16_kernel<T><<<pg.grid, pg.block, 0, stream>>>(
            static_cast<const T*>(x), H, W, Ci, OH, OW, rows, static_cast<T*>(pool), pool_c,
            pool_off, argmax);
      } else {
        const PoolGrid pg = pool_grid(Ci, rows);
        maxpool3s2_kernel<T><<<pg.grid, pg.block, 0, stream>>>(
            static_cast<const T*>(x), H, W, Ci, OH, OW, rows, static_cast<T*>(pool), pool_c,
            pool_off, argmax);
      }
    });
    return launch_status();
  }
  if (conv_ep.sum && !conv_ep.part) return cudaErrorInvalidValue;  // statistics via partials
  GridGeom g{N, H, W, Ci, Co, OH, OW, M, false, false};
  g.vec_x = Ci % 8 == 0 && aligned_to(x, 16);
  g.vec_w = Co % 8 == 0 && aligned_to(w_packed, 16);
  const bool pair_ok = conv_ep.out_c % 2 == 0 && conv_ep.out_off % 2 == 0 &&
                       aligned_to(conv_ep.out, 4);
  dim3 grid((unsigned)((M + kMT - 1) / kMT), (Co + kNT - 1) / kNT);
  switch (dt) {
    case DType::F16:
      grid_reduce_mma_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(w_packed), g, conv_ep,
          static_cast<__half*>(pool), pool_c, pool_off, argmax, pair_ok);
      break;
    case DType::BF16:
      grid_reduce_mma_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w_packed), g,
          conv_ep, static_cast<__nv_bfloat16*>(pool), pool_c, pool_off, argmax, pair_ok);
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

cudaError_t launch_maxpool_bwd(DType dt, const void* g, int g_c, int g_off, const uint8_t* argmax,
                               void* dx, int N, int H, int W, int C, bool accumulate,
                               cudaStream_t stream) {
  if (H < 3 || W < 3) return cudaErrorInvalidValue;
  const int OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  if ((int64_t)N * H * W * C == 0) return cudaSuccess;
  const int rows = N * H;
  IFAST_DISPATCH_ALL(dt, {
    constexpr int V = 16 / sizeof(T);
    const bool vec = C % V == 0 && g_c % V == 0 && g_off % V == 0 && aligned_to(g, 16) &&
                     aligned_to(dx, 16) && aligned_to(argmax, V);
    if (vec) {
      const PoolGrid pg = pool_grid(C / V, rows);
      maxpool3s2_bwd_v16_kernel<T><<<pg.grid, pg.block, 0, stream>>>(
          static_cast<const T*>(g), g_c, g_off, argmax, static_cast<T*>(dx), H, W, C, OH, OW, rows,
          accumulate);
    } else {
      const PoolGrid pg = pool_grid(C, rows);
      maxpool3s2_bwd_kernel<T><<<pg.grid, pg.block, 0, stream>>>(
          static_cast<const T*>(g), g_c, g_off, argmax, static_cast<T*>(dx), H, W, C, OH, OW, rows,
          accumulate);
    }
  });
  return launch_status();
}

}  // namespace ifast
