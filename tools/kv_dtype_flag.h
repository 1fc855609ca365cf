// `--kv-dtype`, shared by the commands that compile a model (compile, and run / bench / serve when
// they compile one in memory): which dtype the paged KV cache stores.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "ir/dtype.h"

namespace kiln::tools {

/// Registers `--kv-dtype` on `cmd`, stored into `*value`: "auto" (the default: the activations'
/// dtype) or "fp8e4m3" (e4m3 codes with an f32 scale per (slot, KV head): about half the KV bytes,
/// so about twice the tokens in the same pool).
void add_kv_dtype_option(CLI::App* cmd, std::string* value);

/// The StepLimits::kv_dtype a `--kv-dtype` value asks for (nullopt: the activations' dtype).
std::optional<DType> kv_dtype_of(const std::string& value);

}  // namespace kiln::tools
