// Tensor checks shared by the Python bindings (bindings.cpp: BN and the module, bindings_conv.cpp:
// the conv / pool ops): device, dtype, channels_last, shapes and aliasing, with clear messages;
// epilogue filling and weight packing. Header-only (inline) so that each binding file includes
// torch's headers once.
#pragma once
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>

#include "launchers.h"

namespace ifast_bind {

using ifast::DType;
using OptT = std::optional<at::Tensor>;

inline DType dtype_of(const at::Tensor& t, const char* op, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    default:
      TORCH_CHECK(false, op, ": ", name, " dtype must be float32, float16 or bfloat16, got ",
                  t.scalar_type());
  }
  return DType::F32;
}

inline void check_cuda(const at::Tensor& t, const at::Tensor& ref, const char* op,
                       const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(),
              " but the input is on ", ref.device());
}

// A 4-D activation stored channels_last (NHWC, dense).
inline void check_nhwc(const at::Tensor& t, const at::Tensor& ref, const char* op,
                       const char* name) {
  check_cuda(t, ref, op, name);
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", name,
              " must be channels_last contiguous (t.contiguous(memory_format=torch.channels_last)),"
              " got shape ", t.sizes(), " strides ", t.strides());
}

// `out` receives channels [off, off + C) of an (N, C_total, H, W) channels_last tensor.
inline void check_slice(const at::Tensor& out, const at::Tensor& ref, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t off, at::ScalarType dtype, const char* op,
                        const char* name) {
  check_nhwc(out, ref, op, name);
  TORCH_CHECK(out.size(0) == N && out.size(2) == H && out.size(3) == W, op, ": ", name,
              " has shape ", out.sizes(), ", expected (", N, ", C_total, ", H, ", ", W, ")");
  TORCH_CHECK(off >= 0 && off + C <= out.size(1), op, ": channel slice [", off, ", ", off + C,
              ") does not fit in ", name, " with ", out.size(1), " channels");
  TORCH_CHECK(out.scalar_type() == dtype, op, ": ", name, " dtype ", out.scalar_type(),
              " differs from the input dtype ", dtype);
}

// Per-channel vector: 1-D, C elements, given dtype, contiguous, same device.
inline void check_vec(const at::Tensor& t, const at::Tensor& ref, int64_t C,
                      at::ScalarType dtype, const char* op, const char* name) {
  check_cuda(t, ref, op, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == C, op, ": ", name, " must have shape (", C,
              "), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// The kernels read their inputs through __restrict__ pointers while they write their outputs:
// an output sharing memory with an input is undefined behaviour there, so it is refused (the
// same message as inception_fast/ops/csrc_reference.py check_no_overlap).
inline void check_no_overlap(const at::Tensor& out, const at::Tensor& in, const char* op,
                             const char* out_name, const char* in_name) {
  auto st = at::get_overlap_status(out, in);
  const bool overlap = st == at::MemOverlapStatus::Full || st == at::MemOverlapStatus::Partial ||
                       (st == at::MemOverlapStatus::TooHard && out.is_alias_of(in));
  TORCH_CHECK(!overlap, op, ": ", out_name, " shares memory with ", in_name, " (the kernel reads ",
              in_name, " while it writes ", out_name, "); pass a separate tensor");
}

// fp32 per-block partials of a deterministic per-channel reduction ([2][rows][C]).
inline at::Tensor partials(const at::Tensor& like, int64_t rows, int64_t C) {
  return at::empty({2, rows, C}, like.options().dtype(at::kFloat));
}

inline void check_pair(const OptT& a, const OptT& b, const char* op, const char* names) {
  TORCH_CHECK(a.has_value() == b.has_value(), op, ": give both or neither of ", names);
}

inline void cuda_ok(cudaError_t e, const char* op) {
  TORCH_CHECK(e == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(e));
}

template <typename P>
P* ptr_or_null(const OptT& t) {
  return t.has_value() ? static_cast<P*>(t->data_ptr()) : nullptr;
}

// Fill an epilogue from the optional BN pieces after checking them.
inline ifast::Epilogue make_epilogue(const at::Tensor& out, int64_t off, const OptT& sum,
                                     const OptT& sumsq, const OptT& scale, const OptT& shift,
                                     const at::Tensor& ref, int64_t Co, const char* op) {
  check_pair(sum, sumsq, op, "sum and sumsq");
  check_pair(scale, shift, op, "scale and shift");
  if (sum) {
    check_vec(*sum, ref, Co, at::kDouble, op, "sum");
    check_vec(*sumsq, ref, Co, at::kDouble, op, "sumsq");
  }
  if (scale) {
    check_vec(*scale, ref, Co, at::kFloat, op, "scale");
    check_vec(*shift, ref, Co, at::kFloat, op, "shift");
  }
  ifast::Epilogue ep;
  ep.out = out.data_ptr();
  ep.out_c = (int)out.size(1);
  ep.out_off = (int)off;
  ep.sum = ptr_or_null<double>(sum);
  ep.sumsq = ptr_or_null<double>(sumsq);
  ep.scale = ptr_or_null<const float>(scale);
  ep.shift = ptr_or_null<const float>(shift);
  return ep;
}

// [taps][Ci][Co] from torch's (Co, Ci, kh, kw) with kh * kw = taps, taps in row-major order.
inline at::Tensor pack_weight(const at::Tensor& w) {
  return w.reshape({w.size(0), w.size(1), w.size(2) * w.size(3)}).permute({2, 1, 0}).contiguous();
}

// The kernels' weight operand: `packed` when the caller has it (the ops keep one per weight
// version, so a training step packs each weight once, and it may come from fp32 master
// weights), else packed here from `weight`, which must then be in the input's dtype.
inline at::Tensor weight_operand(const at::Tensor& weight, const OptT& packed,
                                 const at::Tensor& x, const char* op) {
  const int64_t taps = weight.size(2) * weight.size(3), Ci = weight.size(1), Co = weight.size(0);
  if (!packed) {
    TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight dtype ",
                weight.scalar_type(), " differs from the input dtype ", x.scalar_type(),
                " (or pass packed=, the weight packed in the input dtype)");
    return pack_weight(weight);
  }
  check_cuda(*packed, x, op, "packed");
  TORCH_CHECK(packed->scalar_type() == x.scalar_type(), op, ": packed dtype ",
              packed->scalar_type(), " differs from the input dtype ", x.scalar_type());
  TORCH_CHECK(packed->sizes() == at::IntArrayRef({taps, Ci, Co}) && packed->is_contiguous(), op,
              ": packed must be the contiguous (taps, C_in, C_out) = (", taps, ", ", Ci, ", ", Co,
              ") packing of the weight, got ", packed->sizes());
  return *packed;
}

}  // namespace ifast_bind
