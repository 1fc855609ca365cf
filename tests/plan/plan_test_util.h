// A hand-built Plan that sets every field to a non-default value (plan/ tests build plans by hand:
// the plan library knows nothing of codegen), and a temp file holding the bytes its weight
// references.
#pragma once

#include <xxhash.h>

#include <fstream>
#include <limits>
#include <string>

#include "plan/plan.h"
#include "plan/plan_file.h"
#include "tests/fixtures.h"

namespace kiln::testing {

struct SamplePlan {
  Plan plan;
  std::vector<PlanBlob> blobs;
  std::string weight_file;
};

inline SamplePlan make_sample_plan() {
  SamplePlan s;
  s.weight_file = unique_temp_path("weights.bin");
  std::string wbytes(4096, '\0');
  for (size_t i = 0; i < wbytes.size(); ++i) wbytes[i] = static_cast<char>(i * 7 + 3);
  std::ofstream(s.weight_file, std::ios::binary) << wbytes;
  s.blobs = {{"k.cubin", std::string(1000, 'c')},
             {"k.ptx", "// ptx mma.sync"},
             {"k.cu", "extern \"C\" __global__ void k() {}"},
             {"weight:lm_head", std::string(64, 'w')}};

  Plan& p = s.plan;
  p.kiln_version = "0.1.0";
  p.arch = "sm_90a";
  p.nvrtc_version = "13.0";
  p.nvrtc_flags = {"--gpu-architecture=sm_90a", "-std=c++17"};
  p.model.architecture = "llama";
  p.model.source_architecture = "LlamaForCausalLM";
  p.model.hidden_size = 64;
  p.model.num_layers = 2;
  p.model.num_heads = 4;
  p.model.num_kv_heads = 2;
  p.model.head_dim = 16;
  p.model.intermediate_size = 128;
  p.model.vocab_size = 32;
  p.model.max_context = 256;
  p.model.rms_eps = 1e-6;
  p.model.rope_theta = 500000.0;
  p.model.rope_scaling = RopeScaling{8.0, 1.0, 4.0, 8192};
  p.model.rope_interleaved = true;
  p.model.tie_embeddings = true;
  p.model.attention_bias = true;
  p.model.bos_id = 1;
  p.model.eos_ids = {2, 7};
  p.model.weights_dtype = DType::kF16;
  p.model_path = "/models/tiny.gguf";
  p.tokenizer_path = "/models/tiny.gguf";
  p.limits.max_tokens = 128;
  p.limits.max_seqs = 8;
  p.limits.max_context = 256;
  p.limits.page_size = 32;
  p.limits.max_pool_pages = 4096;
  p.limits.dtype = DType::kF16;
  p.ir = "graph @g {\n}\n";
  p.kernels.push_back({"k",
                       KernelFamily::kRmsNormResidual,
                       {{"y", ParamType::kPointer},
                        {"n", ParamType::kI64},
                        {"rows", ParamType::kI32},
                        {"eps", ParamType::kF32}},
                       32,
                       1024,
                       16,
                       8,
                       0,
                       1,
                       2});
  PlanLaunch l;
  l.node = 3;
  l.kernel = 0;
  l.rule.grid = {"cdiv(T*3, 64) + S", "2", "1"};
  l.rule.block = {"128", "1", "1"};
  l.rule.dynamic_shared_bytes = "S*4";
  l.rule.when = StepKind::kDecode;
  l.args = {LaunchArg::tensor("%12"), LaunchArg::integer("T*9"), LaunchArg::workspace("ws_3"),
            LaunchArg::floating(-std::numeric_limits<double>::infinity())};
  p.launches.push_back(l);
  l.node = -1;
  l.rule.when = StepKind::kAlways;
  l.args = {LaunchArg::runtime_input(RuntimeInput::kTopP), LaunchArg::floating(1e-5),
            LaunchArg::runtime_input(RuntimeInput::kUniform), LaunchArg::tensor("@embed")};
  p.launches.push_back(l);
  PlanGemm g;
  g.node = 4;
  g.m = "T";
  g.n = 64;
  g.k = 128;
  g.a_dtype = DType::kF16;
  g.b_dtype = DType::kQ4_1;
  g.out_dtype = DType::kF32;
  g.epilogue = GemmEpilogue::kBiasResidual;
  g.a = "%1";
  g.b = "@layers.0.q_proj";
  g.bias = "@layers.0.q_bias";
  g.residual = "%0";
  g.out = "%5";
  p.gemms.push_back(g);
  p.workspaces.push_back({"ws_3", "32*S*4"});
  p.aliases.push_back({"%7", "%k_cache.0"});
  p.constants.push_back({"%9", DType::kF32, -std::numeric_limits<double>::infinity()});
  MemoryPlan m;
  m.buffers = {{"%5", 0, 512, 4, 9, ""}, {"%6", 0, 512, 4, 9, "%5"}};
  m.arena_bytes = 512;
  m.lower_bound_bytes = 256;
  m.alignment = 256;
  p.memory = m;
  p.kv.page_size = 32;
  p.kv.dtype = DType::kF16;
  p.kv.num_layers = 2;
  p.kv.num_kv_heads = 2;
  p.kv.head_dim = 16;
  PlanWeight w;
  w.name = "embed";
  w.dtype = DType::kBF16;
  w.shape = {32, 64};
  w.file = s.weight_file;
  w.source_name = "token_embd.weight";
  w.offset = 0;
  w.size = 4096;
  w.xxh3 = XXH3_64bits(wbytes.data(), wbytes.size());
  p.weights.push_back(w);
  PlanWeight packed;
  packed.name = "lm_head";
  packed.dtype = DType::kF32;
  packed.shape = {4, 4};
  packed.blob = 3;
  p.weights.push_back(packed);
  return s;
}

}  // namespace kiln::testing
