// `--kv-dtype` (see kv_dtype_flag.h).
#include "tools/kv_dtype_flag.h"

namespace kiln::tools {

void add_kv_dtype_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--kv-dtype", *value,
                  "KV cache dtype: auto (the activations' dtype) or fp8e4m3 (e4m3 codes with an "
                  "f32 scale per token and KV head: about half the KV bytes, twice the tokens "
                  "per GiB; see the README for its accuracy)")
      ->check(CLI::IsMember({"auto", "fp8e4m3"}))
      ->capture_default_str();
}

std::optional<DType> kv_dtype_of(const std::string& value) {
  if (value == "fp8e4m3") return DType::kFP8E4M3;
  return std::nullopt;
}

}  // namespace kiln::tools
