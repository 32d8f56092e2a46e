// Python bindings of the conv / pool ops of inception_fast._C (asym_conv, grid_reduce,
// maxpool_bwd): checks (bindings_checks.h), output slices, weight operand, then the launchers of
// asym_conv.cu, grid_reduce.cu and maxpool.cu. Registered into the module by bindings.cpp.
#include "bindings_checks.h"

namespace ifast_bind {
namespace {

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
  TORCH_CHECK(taps >= 2 && taps <= ifast::asym_conv_max_taps(), op, ": 2 to ",
              ifast::asym_conv_max_taps(), " taps, got ", taps, " (a 1x1 conv is a GEMM)");
  TORCH_CHECK(pad >= 0, op, ": padding must be >= 0, got ", pad);
  const int64_t L = vertical ? H : W;
  TORCH_CHECK(L + 2 * pad <= ifast::asym_conv_max_padded_line(), op, ": padded line length ",
              L + 2 * pad, " exceeds the kernel's tile (", ifast::asym_conv_max_padded_line(),
              "); use cuDNN for this shape");
  const int64_t Lo = L + 2 * pad - taps + 1;
  TORCH_CHECK(Lo >= 1, op, ": output would be empty (line ", L, ", pad ", pad, ", taps ", taps,
              ")");
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
  TORCH_CHECK(argmax.scalar_type() == at::kByte &&
                  argmax.sizes() == at::IntArrayRef({N, C, OH, OW}),
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

}  // namespace

void register_conv_ops(py::module_& m) {
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
  m.def("asym_conv_max_padded_line", &ifast::asym_conv_max_padded_line);
  m.def("asym_conv_max_taps", &ifast::asym_conv_max_taps);
}

}  // namespace ifast_bind
