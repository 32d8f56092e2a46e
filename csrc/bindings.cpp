// Python bindings of inception_fast._C: tensor checks (device, dtype, channels_last, shapes) with
// clear messages, output allocation, weight packing, then the raw launchers of csrc/*.cu.
// Every activation is a logical (N, C, H, W) torch tensor stored channels_last (NHWC).
// Autograd lives in inception_fast/ops/; the torch reference of every function here is
// inception_fast/ops/csrc_reference.py (same names, same arguments).
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <optional>

#include "launchers.h"

namespace {

using ifast::DType;
using OptT = std::optional<at::Tensor>;

DType dtype_of(const at::Tensor& t, const char* op, const char* name) {
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

void check_cuda(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(),
              " but the input is on ", ref.device());
}

// A 4-D activation stored channels_last (NHWC, dense).
void check_nhwc(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  check_cuda(t, ref, op, name);
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", name,
              " must be channels_last contiguous (t.contiguous(memory_format=torch.channels_last)),"
              " got shape ", t.sizes(), " strides ", t.strides());
}

// `out` receives channels [off, off + C) of an (N, C_total, H, W) channels_last tensor.
void check_slice(const at::Tensor& out, const at::Tensor& ref, int64_t N, int64_t C, int64_t H,
                 int64_t W, int64_t off, at::ScalarType dtype, const char* op, const char* name) {
  check_nhwc(out, ref, op, name);
  TORCH_CHECK(out.size(0) == N && out.size(2) == H && out.size(3) == W, op, ": ", name,
              " has shape ", out.sizes(), ", expected (", N, ", C_total, ", H, ", ", W, ")");
  TORCH_CHECK(off >= 0 && off + C <= out.size(1), op, ": channel slice [", off, ", ", off + C,
              ") does not fit in ", name, " with ", out.size(1), " channels");
  TORCH_CHECK(out.scalar_type() == dtype, op, ": ", name, " dtype ", out.scalar_type(),
              " differs from the input dtype ", dtype);
}

// Per-channel vector: 1-D, C elements, given dtype, contiguous, same device.
void check_vec(const at::Tensor& t, const at::Tensor& ref, int64_t C, at::ScalarType dtype,
               const char* op, const char* name) {
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
void check_no_overlap(const at::Tensor& out, const at::Tensor& in, const char* op,
                      const char* out_name, const char* in_name) {
  auto st = at::get_overlap_status(out, in);
  const bool overlap = st == at::MemOverlapStatus::Full || st == at::MemOverlapStatus::Partial ||
                       (st == at::MemOverlapStatus::TooHard && out.is_alias_of(in));
  TORCH_CHECK(!overlap, op, ": ", out_name, " shares memory with ", in_name, " (the kernel reads ",
              in_name, " while it writes ", out_name, "); pass a separate tensor");
}

// fp32 per-block partials of a deterministic per-channel reduction ([2][rows][C]).
at::Tensor partials(const at::Tensor& like, int64_t rows, int64_t C) {
  return at::empty({2, rows, C}, like.options().dtype(at::kFloat));
}

void check_pair(const OptT& a, const OptT& b, const char* op, const char* names) {
  TORCH_CHECK(a.has_value() == b.has_value(), op, ": give both or neither of ", names);
}

void cuda_ok(cudaError_t e, const char* op) {
  TORCH_CHECK(e == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(e));
}

template <typename P>
P* ptr_or_null(const OptT& t) {
  return t.has_value() ? static_cast<P*>(t->data_ptr()) : nullptr;
}

// Fill an epilogue from the optional BN pieces after checking them.
ifast::Epilogue make_epilogue(const at::Tensor& out, int64_t off, const OptT& sum, const OptT& sumsq,
                              const OptT& scale, const OptT& shift, const at::Tensor& ref,
                              int64_t Co, const char* op) {
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
at::Tensor pack_weight(const at::Tensor& w) {
  return w.reshape({w.size(0), w.size(1), w.size(2) * w.size(3)}).permute({2, 1, 0}).contiguous();
}

// The kernels' weight operand: `packed` when the caller has it (the ops keep one per weight
// version, so a training step packs each weight once, and it may come from fp32 master
// weights), else packed here from `weight`, which must then be in the input's dtype.
at::Tensor weight_operand(const at::Tensor& weight, const OptT& packed, const at::Tensor& x,
                          const char* op) {
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

void asym_conv(const at::Tensor& x, const at::Tensor& weight, int64_t pad, const at::Tensor& out,
               int64_t out_offset, const OptT& sum, const OptT& sumsq, const OptT& scale,
               const OptT& shift, const OptT& packed) {
  const char* op = "asym_conv";
  check_nhwc(x, x, op, "input");
  const DType dt = dtype_of(x, op, "input");
  check_cuda(weight, x, op, "weight");
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_out, C_in, kh, kw), got ",
              weight.sizes());
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Co = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK(weight.size(1) == Ci, op, ": input has ", Ci, " channels but the weight expects ",
              weight.size(1));
  TORCH_CHECK(kh == 1 || kw == 1, op, ": kernel must be 1xn or nx1, got ", kh, "x", kw);
  const bool vertical = kw == 1 && kh > 1;
  const int64_t taps = vertical ? kh : kw;
  TORCH_CHECK(taps <= ifast::asym_conv_max_taps(), op, ": at most ",
              ifast::asym_conv_max_taps(), " taps, got ", taps);
  TORCH_CHECK(pad >= 0, op, ": padding must be >= 0, got ", pad);
  const int64_t L = vertical ? H : W;
  TORCH_CHECK(L + 2 * pad <= ifast::asym_conv_max_padded_line(), op, ": padded line length ",
              L + 2 * pad, " exceeds the kernel's tile (", ifast::asym_conv_max_padded_line(),
              "); use cuDNN for this shape");
  const int64_t Lo = L + 2 * pad - taps + 1;
  TORCH_CHECK(Lo >= 1, op, ": output would be empty (line ", L, ", pad ", pad, ", taps ", taps, ")");
  const int64_t Ho = vertical ? Lo : H, Wo = vertical ? W : Lo;
  check_slice(out, x, N, Co, Ho, Wo, out_offset, x.scalar_type(), op, "out");
  check_no_overlap(out, x, op, "out", "the input");
  auto ep = make_epilogue(out, out_offset, sum, sumsq, scale, shift, x, Co, op);
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor part;
  if (sum) {
    part = partials(x, ifast::asym_conv_row_blocks((int)N, (int)H, (int)W, (int)taps, (int)pad,
                                                   vertical), Co);
    ep.part = part.data_ptr<float>();
  }
  const at::Tensor wp = weight_operand(weight, packed, x, op);
  cuda_ok(ifast::launch_asym_conv(dt, x.data_ptr(), wp.data_ptr(), (int)N, (int)H, (int)W, (int)Ci,
                                  (int)Co, (int)taps, (int)pad, vertical, ep,
                                  c10::cuda::getCurrentCUDAStream()),
          op);
}

void grid_reduce(const at::Tensor& x, const OptT& weight, const OptT& conv_out, int64_t conv_offset,
                 const OptT& pool_out, int64_t pool_offset, const OptT& argmax, const OptT& sum,
                 const OptT& sumsq, const OptT& scale, const OptT& shift, const OptT& packed) {
  const char* op = "grid_reduce";
  check_nhwc(x, x, op, "input");
  const DType dt = dtype_of(x, op, "input");
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H >= 3 && W >= 3, op, ": input must be at least 3x3 for a 3x3/2 window, got ", H,
              "x", W);
  const int64_t OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  TORCH_CHECK(weight.has_value() || pool_out.has_value(), op,
              ": nothing to do (give a conv weight, a pool output, or both)");
  check_pair(weight, conv_out, op, "weight and conv_out");
  check_pair(pool_out, argmax, op, "pool_out and argmax");
  ifast::Epilogue ep;
  int64_t Co = 0;
  at::Tensor wp;
  if (weight) {
    TORCH_CHECK(dt != DType::F32, op,
                ": the fused conv runs on tensor cores and needs float16 or bfloat16 input; for "
                "float32 run the conv with cuDNN and the pool alone (weight=None)");
    check_cuda(*weight, x, op, "weight");
    TORCH_CHECK(weight->dim() == 4 && weight->size(1) == Ci && weight->size(2) == 3 &&
                    weight->size(3) == 3,
                op, ": weight must be (C_out, ", Ci, ", 3, 3), got ", weight->sizes());
    Co = weight->size(0);
    check_slice(*conv_out, x, N, Co, OH, OW, conv_offset, x.scalar_type(), op, "conv_out");
    check_no_overlap(*conv_out, x, op, "conv_out", "the input");
    ep = make_epilogue(*conv_out, conv_offset, sum, sumsq, scale, shift, x, Co, op);
    wp = weight_operand(*weight, packed, x, op);
  } else {
    TORCH_CHECK(!sum && !scale && !packed, op,
                ": BN statistics / scale / packed need a conv weight");
  }
  if (pool_out) {
    check_slice(*pool_out, x, N, Ci, OH, OW, pool_offset, x.scalar_type(), op, "pool_out");
    check_nhwc(*argmax, x, op, "argmax");
    TORCH_CHECK(argmax->scalar_type() == at::kByte, op, ": argmax must be uint8, got ",
                argmax->scalar_type());
    TORCH_CHECK(argmax->sizes() == at::IntArrayRef({N, Ci, OH, OW}), op,
                ": argmax must have shape (", N, ", ", Ci, ", ", OH, ", ", OW, "), got ",
                argmax->sizes());
    check_no_overlap(*pool_out, x, op, "pool_out", "the input");
    check_no_overlap(*argmax, x, op, "argmax", "the input");
    check_no_overlap(*argmax, *pool_out, op, "argmax", "pool_out");
  }
  if (weight && pool_out && conv_out->is_alias_of(*pool_out)) {
    // One block output holds both slices (the fused Mixed_6a): they must be disjoint channel
    // ranges of the same tensor.
    TORCH_CHECK(conv_out->data_ptr() == pool_out->data_ptr() &&
                    conv_out->strides() == pool_out->strides() &&
                    conv_out->sizes() == pool_out->sizes(),
                op, ": conv_out and pool_out share memory but are different views; pass the same "
                "block output tensor for both (with disjoint offsets) or separate tensors");
    TORCH_CHECK(conv_offset + Co <= pool_offset || pool_offset + Ci <= conv_offset, op,
                ": conv slice [", conv_offset, ", ", conv_offset + Co, ") and pool slice [",
                pool_offset, ", ", pool_offset + Ci, ") of one output overlap");
  }
  if (weight && pool_out) check_no_overlap(*argmax, *conv_out, op, "argmax", "conv_out");
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor part;
  if (sum) {
    part = partials(x, ifast::grid_reduce_row_blocks((int)N, (int)H, (int)W), Co);
    ep.part = part.data_ptr<float>();
  }
  cuda_ok(ifast::launch_grid_reduce(
              dt, x.data_ptr(), weight ? wp.data_ptr() : nullptr, (int)N, (int)H, (int)W, (int)Ci,
              (int)Co, ep, pool_out ? pool_out->data_ptr() : nullptr,
              pool_out ? (int)pool_out->size(1) : 0, (int)pool_offset,
              argmax ? argmax->data_ptr<uint8_t>() : nullptr, c10::cuda::getCurrentCUDAStream()),
          op);
}

void maxpool_bwd(const at::Tensor& g, int64_t g_offset, const at::Tensor& argmax,
                 const at::Tensor& dx, bool accumulate) {
  const char* op = "maxpool_bwd";
  check_nhwc(dx, dx, op, "dx");
  const DType dt = dtype_of(dx, op, "dx");
  const int64_t N = dx.size(0), C = dx.size(1), H = dx.size(2), W = dx.size(3);
  TORCH_CHECK(H >= 3 && W >= 3, op, ": dx must be at least 3x3, got ", H, "x", W);
  const int64_t OH = (H - 3) / 2 + 1, OW = (W - 3) / 2 + 1;
  check_slice(g, dx, N, C, OH, OW, g_offset, dx.scalar_type(), op, "grad");
  check_nhwc(argmax, dx, op, "argmax");
  TORCH_CHECK(argmax.scalar_type() == at::kByte && argmax.sizes() == at::IntArrayRef({N, C, OH, OW}),
              op, ": argmax must be uint8 of shape (", N, ", ", C, ", ", OH, ", ", OW, "), got ",
              argmax.scalar_type(), " ", argmax.sizes());
  check_no_overlap(dx, g, op, "dx", "grad");
  check_no_overlap(dx, argmax, op, "dx", "argmax");
  c10::cuda::CUDAGuard guard(dx.device());
  cuda_ok(ifast::launch_maxpool_bwd(dt, g.data_ptr(), (int)g.size(1), (int)g_offset,
                                    argmax.data_ptr<uint8_t>(), dx.data_ptr(), (int)N, (int)H,
                                    (int)W, (int)C, accumulate, c10::cuda::getCurrentCUDAStream()),
          op);
}

void bn_stats(const at::Tensor& y, const at::Tensor& sum, const at::Tensor& sumsq) {
  const char* op = "bn_stats";
  check_nhwc(y, y, op, "y");
  const DType dt = dtype_of(y, op, "y");
  const int64_t C = y.size(1), M = y.numel() / std::max<int64_t>(C, 1);
  check_vec(sum, y, C, at::kDouble, op, "sum");
  check_vec(sumsq, y, C, at::kDouble, op, "sumsq");
  c10::cuda::CUDAGuard guard(y.device());
  at::Tensor part = partials(y, ifast::bn_row_blocks(M), C);
  cuda_ok(ifast::launch_bn_stats(dt, y.data_ptr(), M, (int)C, sum.data_ptr<double>(),
                                 sumsq.data_ptr<double>(), part.data_ptr<float>(),
                                 c10::cuda::getCurrentCUDAStream()),
          op);
}

at::Tensor bn_finalize(const at::Tensor& sum, const at::Tensor& sumsq, int64_t count, double eps,
                       const OptT& gamma, const OptT& beta) {
  const char* op = "bn_finalize";
  const int64_t C = sum.numel();
  check_vec(sum, sum, C, at::kDouble, op, "sum");
  check_vec(sumsq, sum, C, at::kDouble, op, "sumsq");
  TORCH_CHECK(count > 0, op, ": count must be positive, got ", count);
  if (gamma) check_vec(*gamma, sum, C, at::kFloat, op, "gamma");
  if (beta) check_vec(*beta, sum, C, at::kFloat, op, "beta");
  c10::cuda::CUDAGuard guard(sum.device());
  at::Tensor out5 = at::empty({5, C}, sum.options().dtype(at::kFloat));
  cuda_ok(ifast::launch_bn_finalize(sum.data_ptr<double>(), sumsq.data_ptr<double>(), (int)C, count,
                                    eps, ptr_or_null<const float>(gamma),
                                    ptr_or_null<const float>(beta), out5.data_ptr<float>(),
                                    c10::cuda::getCurrentCUDAStream()),
          op);
  return out5;
}

void bn_apply_relu(const at::Tensor& y, const at::Tensor& scale, const at::Tensor& shift,
                   const at::Tensor& out, int64_t out_offset) {
  const char* op = "bn_apply_relu";
  check_nhwc(y, y, op, "y");
  const DType dt = dtype_of(y, op, "y");
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  check_vec(scale, y, C, at::kFloat, op, "scale");
  check_vec(shift, y, C, at::kFloat, op, "shift");
  check_slice(out, y, N, C, H, W, out_offset, y.scalar_type(), op, "out");
  check_no_overlap(out, y, op, "out", "y");
  c10::cuda::CUDAGuard guard(y.device());
  cuda_ok(ifast::launch_bn_apply_relu(dt, y.data_ptr(), N * H * W, (int)C, scale.data_ptr<float>(),
                                      shift.data_ptr<float>(), out.data_ptr(), (int)out.size(1),
                                      (int)out_offset, c10::cuda::getCurrentCUDAStream()),
          op);
}

// Shared checks of the two backward functions.
void check_bwd(const at::Tensor& g, int64_t g_offset, const at::Tensor& y, const at::Tensor& scale,
               const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
               const char* op) {
  check_nhwc(y, y, op, "y");
  dtype_of(y, op, "y");
  const int64_t C = y.size(1);
  check_slice(g, y, y.size(0), C, y.size(2), y.size(3), g_offset, y.scalar_type(), op, "grad");
  check_vec(scale, y, C, at::kFloat, op, "scale");
  check_vec(shift, y, C, at::kFloat, op, "shift");
  check_vec(mean, y, C, at::kFloat, op, "mean");
  check_vec(invstd, y, C, at::kFloat, op, "invstd");
}

void bn_relu_bwd_reduce(const at::Tensor& g, int64_t g_offset, const at::Tensor& y,
                        const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean,
                        const at::Tensor& invstd, const at::Tensor& sum_g,
                        const at::Tensor& sum_gx) {
  const char* op = "bn_relu_bwd_reduce";
  check_bwd(g, g_offset, y, scale, shift, mean, invstd, op);
  const int64_t C = y.size(1), M = y.numel() / std::max<int64_t>(C, 1);
  check_vec(sum_g, y, C, at::kDouble, op, "sum_g");
  check_vec(sum_gx, y, C, at::kDouble, op, "sum_gx");
  c10::cuda::CUDAGuard guard(y.device());
  at::Tensor part = partials(y, ifast::bn_row_blocks(M), C);
  cuda_ok(ifast::launch_bn_relu_bwd_reduce(
              dtype_of(y, op, "y"), g.data_ptr(), (int)g.size(1), (int)g_offset, y.data_ptr(), M,
              (int)C, scale.data_ptr<float>(), shift.data_ptr<float>(), mean.data_ptr<float>(),
              invstd.data_ptr<float>(), sum_g.data_ptr<double>(), sum_gx.data_ptr<double>(),
              part.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()),
          op);
}

at::Tensor bn_relu_bwd_apply(const at::Tensor& g, int64_t g_offset, const at::Tensor& y,
                             const at::Tensor& scale, const at::Tensor& shift,
                             const at::Tensor& mean, const at::Tensor& invstd,
                             const at::Tensor& sum_g, const at::Tensor& sum_gx, int64_t count,
                             bool training) {
  const char* op = "bn_relu_bwd_apply";
  check_bwd(g, g_offset, y, scale, shift, mean, invstd, op);
  const int64_t C = y.size(1), M = y.numel() / std::max<int64_t>(C, 1);
  check_vec(sum_g, y, C, at::kDouble, op, "sum_g");
  check_vec(sum_gx, y, C, at::kDouble, op, "sum_gx");
  TORCH_CHECK(!training || count > 0, op, ": count must be positive in training, got ", count);
  c10::cuda::CUDAGuard guard(y.device());
  at::Tensor dy = at::empty_like(y, at::MemoryFormat::ChannelsLast);
  cuda_ok(ifast::launch_bn_relu_bwd_apply(
              dtype_of(y, op, "y"), g.data_ptr(), (int)g.size(1), (int)g_offset, y.data_ptr(), M,
              (int)C, scale.data_ptr<float>(), shift.data_ptr<float>(), mean.data_ptr<float>(),
              invstd.data_ptr<float>(), sum_g.data_ptr<double>(), sum_gx.data_ptr<double>(),
              count, training, dy.data_ptr(), c10::cuda::getCurrentCUDAStream()),
          op);
  return dy;
}

void reduce_partials(const at::Tensor& part, const at::Tensor& sum, const at::Tensor& sumsq) {
  const char* op = "reduce_partials";
  check_cuda(part, part, op, "part");
  TORCH_CHECK(part.dim() == 3 && part.size(0) == 2 && part.scalar_type() == at::kFloat &&
                  part.is_contiguous(),
              op, ": part must be a contiguous float32 (2, blocks, C) tensor, got ",
              part.scalar_type(), " ", part.sizes());
  const int64_t C = part.size(2);
  check_vec(sum, part, C, at::kDouble, op, "sum");
  check_vec(sumsq, part, C, at::kDouble, op, "sumsq");
  c10::cuda::CUDAGuard guard(part.device());
  cuda_ok(ifast::launch_reduce_partials(part.data_ptr<float>(), part.size(1), (int)C,
                                        sum.data_ptr<double>(), sumsq.data_ptr<double>(),
                                        c10::cuda::getCurrentCUDAStream()),
          op);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "inception_fast CUDA C++ kernels (NHWC / channels_last); autograd lives in "
            "inception_fast.ops, torch references in inception_fast.ops.csrc_reference";
  using py::arg;
  m.def("asym_conv", &asym_conv,
        "1xn / nx1 stride-1 conv into out[:, out_offset:]; optional BN stats (sum, sumsq) or "
        "folded eval BN+ReLU (scale, shift)",
        arg("x"), arg("weight"), arg("pad"), arg("out"), arg("out_offset"), arg("sum") = py::none(),
        arg("sumsq") = py::none(), arg("scale") = py::none(), arg("shift") = py::none(),
        arg("packed") = py::none());
  m.def("grid_reduce", &grid_reduce,
        "fused 3x3/2 conv (fp16/bf16) + 3x3/2 max-pool of the same windows into channel slices",
        arg("x"), arg("weight"), arg("conv_out"), arg("conv_offset"), arg("pool_out"),
        arg("pool_offset"), arg("argmax"), arg("sum") = py::none(), arg("sumsq") = py::none(),
        arg("scale") = py::none(), arg("shift") = py::none(), arg("packed") = py::none());
  m.def("maxpool_bwd", &maxpool_bwd, "3x3/2 max-pool backward (gather by argmax) into dx",
        arg("grad"), arg("grad_offset"), arg("argmax"), arg("dx"), arg("accumulate"));
  m.def("bn_stats", &bn_stats,
        "per-channel sum / sum of squares added to fp64 accumulators (deterministic)",
        arg("y"), arg("sum"), arg("sumsq"));
  m.def("reduce_partials", &reduce_partials,
        "sum += fixed-order sum of part[0] over its rows, sumsq likewise from part[1] (the "
        "deterministic second stage of every per-channel reduction)",
        arg("part"), arg("sum"), arg("sumsq"));
  m.def("bn_finalize", &bn_finalize, "(5, C) fp32: mean, var (biased), invstd, scale, shift",
        arg("sum"), arg("sumsq"), arg("count"), arg("eps"), arg("gamma") = py::none(),
        arg("beta") = py::none());
  m.def("bn_apply_relu", &bn_apply_relu, "relu(y * scale + shift) into out[:, out_offset:]",
        arg("y"), arg("scale"), arg("shift"), arg("out"), arg("out_offset"));
  m.def("bn_relu_bwd_reduce", &bn_relu_bwd_reduce,
        "sums of the ReLU-masked gradient and of gradient * xhat (fp64 accumulators)", arg("grad"),
        arg("grad_offset"), arg("y"), arg("scale"), arg("shift"), arg("mean"), arg("invstd"),
        arg("sum_g"), arg("sum_gx"));
  m.def("bn_relu_bwd_apply", &bn_relu_bwd_apply, "gradient w.r.t. the pre-BN conv output y",
        arg("grad"), arg("grad_offset"), arg("y"), arg("scale"), arg("shift"), arg("mean"),
        arg("invstd"), arg("sum_g"), arg("sum_gx"), arg("count"), arg("training"));
  m.def("asym_conv_max_padded_line", &ifast::asym_conv_max_padded_line);
  m.def("asym_conv_max_taps", &ifast::asym_conv_max_taps);
}
