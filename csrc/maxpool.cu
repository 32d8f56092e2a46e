// 3x3 / stride 2 max-pool alone (Mixed_7a's pool branch, which reads the block input while its
// stride-2 convs read intermediate tensors; Mixed_6a's pool is fused into grid_reduce.cu) and
// the 3x3 / stride 2 max-pool backward (a gather by argmax: every input element sums the <= 4
// windows that contain it, no atomics), any dtype, with channel slices.
// Both are bandwidth-bound: 2-D grids (pixels x 16-byte channel vectors, one image row per block
// row, so no per-element 64-bit division), a vector of 8 (16-bit) or 4 (fp32) channels per
// thread when the channel counts and pointers allow it, else one channel: two entry points per
// kernel (`<name>_v16_kernel`, `<name>_kernel`) over one templated body, named apart rather than
// by a width template argument because the static report's known-failures list is
// whitespace-separated and a demangled "k<T, 8>" has a space.
// Reference: F.max_pool2d and its autograd (inception_fast/ops/csrc_reference.py).
#include "common.cuh"

namespace ifast {
namespace {

/// Max-pool 3x3 / stride 2 alone (Mixed_7a's pool branch), any dtype, into a channel slice,
/// with the winning tap. Block row = one output row (n, oh); threads: x = channel vectors of
/// VW channels, y = output columns. Per output vector: 9 vector loads, 1 vector store and VW
/// argmax bytes, 9 compares per element (no FLOP to speak of): ~2.6 B read per B written from
/// HBM (neighbouring windows share a row and a column: the other reads hit L2), so the ceiling
/// aimed at is HBM bandwidth.
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

IFAST_VEC_ENTRY_POINTS(maxpool3s2, 256,
    (const T* __restrict__ x, int H, int W, int C, int OH, int OW, int rows, T* __restrict__ pool,
     int pool_c, int pool_off, uint8_t* __restrict__ argmax),
    (x, H, W, C, OH, OW, rows, pool, pool_c, pool_off, argmax))

/// Max-pool 3x3/2 backward as a gather: input (h, w) lies in windows oh in
/// [ceil((h - 2) / 2), floor(h / 2)] (same for w); it receives g of those whose argmax it is.
/// Block row = one input row (n, h); threads: x = channel vectors, y = input columns. Per input
/// vector: <= 4 (argmax vector, gradient vector) pairs read (mostly L2 hits), one vector
/// written (read too when accumulating), <= 4 adds per element: the ceiling aimed at is HBM
/// bandwidth; no atomics, no 64-bit division.
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

IFAST_VEC_ENTRY_POINTS(maxpool3s2_bwd, 256,
    (const T* __restrict__ g, int g_c, int g_off, const uint8_t* __restrict__ argmax,
     T* __restrict__ dx, int H, int W, int C, int OH, int OW, int rows, bool accumulate),
    (g, g_c, g_off, argmax, dx, H, W, C, OH, OW, rows, accumulate))

// 2-D grid of the pool kernels: x = channel vectors (up to 32 threads), y = rows.
LaunchShape pool_shape(int nvec, int rows) {
  int bx = 1;
  while (bx < nvec && bx < 32) bx *= 2;
  LaunchShape p;
  p.block = dim3(bx, 256 / bx);
  p.grid = dim3((nvec + bx - 1) / bx, rows < 65535 ? rows : 65535);
  return p;
}

// 16-byte vectors of T (and V-byte argmax vectors) when the channel count, the slice of the
// wider tensor and the pointers allow them.
template <typename T>
bool pool_vec_ok(int C, int slice_c, int slice_off, const void* a, const void* b,
                 const void* argmax) {
  constexpr int V = 16 / sizeof(T);
  return C % V == 0 && slice_c % V == 0 && slice_off % V == 0 && aligned_to(a, 16) &&
         aligned_to(b, 16) && aligned_to(argmax, V);
}

}  // namespace

cudaError_t launch_maxpool3s2(DType dt, const void* x, int N, int H, int W, int C, void* pool,
                              int pool_c, int pool_off, uint8_t* argmax, cudaStream_t stream) {
  if (pool == nullptr || H < 3 || W < 3) return cudaErrorInvalidValue;
  const int OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1, rows = N * OH;
  if ((int64_t)rows * OW * C == 0) return cudaSuccess;
  const auto shape = [rows](int nvec) { return pool_shape(nvec, rows); };
  IFAST_DISPATCH_ALL(dt, launch_vec_or_one<16 / sizeof(T)>(
      pool_vec_ok<T>(C, pool_c, pool_off, x, pool, argmax), C, shape, maxpool3s2_v16_kernel<T>,
      maxpool3s2_kernel<T>, stream, static_cast<const T*>(x), H, W, C, OH, OW, rows,
      static_cast<T*>(pool), pool_c, pool_off, argmax));
  return launch_status();
}

cudaError_t launch_maxpool_bwd(DType dt, const void* g, int g_c, int g_off, const uint8_t* argmax,
                               void* dx, int N, int H, int W, int C, bool accumulate,
                               cudaStream_t stream) {
  if (H < 3 || W < 3) return cudaErrorInvalidValue;
  const int OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  if ((int64_t)N * H * W * C == 0) return cudaSuccess;
  const int rows = N * H;
  const auto shape = [rows](int nvec) { return pool_shape(nvec, rows); };
  IFAST_DISPATCH_ALL(dt, launch_vec_or_one<16 / sizeof(T)>(
      pool_vec_ok<T>(C, g_c, g_off, g, dx, argmax), C, shape, maxpool3s2_bwd_v16_kernel<T>,
      maxpool3s2_bwd_kernel<T>, stream, static_cast<const T*>(g), g_c, g_off, argmax,
      static_cast<T*>(dx), H, W, C, OH, OW, rows, accumulate));
  return launch_status();
}

}  // namespace ifast
