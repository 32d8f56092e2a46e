"""Static kernel evidence without a GPU: `inception-fast kernels` (also
`python -m inception_fast.kernel_report`).

Runs the model's ops on meta tensors with the interpreter off, compiles each Triton launch
exactly as the JIT would specialize it (every autotune config pruning keeps, or the first),
reads the CUDA C++ objects, and writes a per-variant resource / instruction-mix table and a
per-layer traffic and roofline table (markdown + JSON). Modules: jit_launch (the JIT's
specialization), capture (recording launches), workload / collect (what runs), variants /
sass / ir (reading binaries and IR), cuda_kernels, traffic (bytes, FLOPs, roofline), gate
(rules and known failures), build (assembly), render (output), cli."""
