// Python bindings of inception_fast._C: the BatchNorm ops (bn_stats, reduce_partials, bn_finalize,
// bn_apply_relu, bn_relu_bwd_*) and the module itself; the conv / pool ops are in
// bindings_conv.cpp, the shared tensor checks in bindings_checks.h. Every activation is a
// logical (N, C, H, W) torch tensor stored channels_last (NHWC). Autograd lives in
// inception_fast/ops/; the torch reference of every function here is
// inception_fast/ops/csrc_reference.py (same names, same arguments).
#include "bindings_checks.h"

namespace ifast_bind {

void register_conv_ops(py::module_& m);  // bindings_conv.cpp

namespace {

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
}  // namespace ifast_bind

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace ifast_bind;
  m.doc() = "inception_fast CUDA C++ kernels (NHWC / channels_last); autograd lives in "
            "inception_fast.ops, torch references in inception_fast.ops.csrc_reference";
  using py::arg;
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
  ifast_bind::register_conv_ops(m);
}
