-- tests/lua/test_ir_train.lua: the IR features the training ops use (gen/ops_train.lua), as
-- both lowerings print them: bf16 stores rounded by the same function, exact ops without
-- contractible products in CUDA, double reductions, runtime row lengths and written column sums.
package.path = "./?.lua;" .. package.path
local check = require("tests.lua.check")
local ops = require("gen.ops_train")
local lower_c = require("gen.lower_c")
local lower_cuda = require("gen.lower_cuda")

local c_adamw = lower_c.op(ops.adamw, {}, "train")
local cu_adamw = lower_cuda.op(ops.adamw, {})
check.ok("adamw C: the shadow stores poa_bf16_from_real(p)",
  c_adamw:find("shadow[start + i] = poa_bf16_from_real(p[start + i]);", 1, true) ~= nil)
check.ok("adamw CUDA: the shadow stores poa_bf16_round(p)",
  cu_adamw:find("shadow[start + i] = poa_bf16_round(p[start + i]);", 1, true) ~= nil)
check.ok("adamw CUDA: signature with unsigned short shadow and long chunk tables",
  cu_adamw:find("poa_train_adamw(float *p, float *m, float *v, unsigned short *shadow, const float *g, const long *chunk_start", 1, true) ~= nil)
local bare = cu_adamw:gsub("__fmul_rn%b()", "")
local body = bare:match("poa_train_adamw%(.-%) {(.*)}") or ""
check.ok("adamw CUDA (exact): every product is __fmul_rn, none left to contract", body ~= "" and not body:find("[%w_%]%)] %* [%w_(]"),
  body)
check.ok("adamw C: the loop runs to the chunk's runtime count", c_adamw:find("for (long i = 0; i < count; i++)", 1, true) ~= nil)

local c_ce = lower_c.op(ops.cross_entropy, {}, "train")
local cu_ce = lower_cuda.op(ops.cross_entropy, {})
check.ok("cross-entropy: double sums in C and block_sum_double in CUDA",
  c_ce:find("double mass = 0;", 1, true) ~= nil and cu_ce:find("mass = block_sum_double(mass);", 1, true) ~= nil)
check.ok("cross-entropy: a max reduction (block_max in CUDA)",
  c_ce:find("reduction(max:mx)", 1, true) ~= nil and cu_ce:find("mx = block_max(mx);", 1, true) ~= nil)

local c_cols = lower_c.op(ops.sinkhorn_columns, {}, "train")
local cu_cols = lower_cuda.op(ops.sinkhorn_columns, {})
check.ok("Sinkhorn columns C: a runtime column count and a written (=) double column sum",
  c_cols:find("const int count = k - c0 < 16", 1, true) ~= nil and c_cols:find("colsum[i] = acc0[c];", 1, true) ~= nil
  and c_cols:find("double acc0[16]", 1, true) ~= nil)
check.ok("Sinkhorn columns CUDA: double partial sums, written",
  cu_cols:find("__shared__ double partial", 1, true) ~= nil and cu_cols:find("colsum[i] = sum0;", 1, true) ~= nil)
check.finish()
