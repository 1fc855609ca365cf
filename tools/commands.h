// Subcommands of the `kiln` CLI. Each add_*_command registers one subcommand whose callback stores
// the process exit code in `*exit_code` (CLI11 callbacks return nothing).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace kiln::tools {

void add_ir_command(CLI::App& app, int* exit_code);
void add_run_command(CLI::App& app, int* exit_code);
void add_compile_command(CLI::App& app, int* exit_code);
void add_inspect_command(CLI::App& app, int* exit_code);
void add_bench_command(CLI::App& app, int* exit_code);  // tools/cmd_bench.cc
void add_serve_command(CLI::App& app, int* exit_code);

/// `kiln ir <plan.kplan>` options (tools/cmd_plan_ir.cc).
struct PlanIrOptions {
  std::string plan;
  bool kernels = false;  // list kernels
  std::string source;    // print this kernel's generated CUDA source
  std::string ptx;       // print this kernel's PTX
};
int run_plan_ir(const PlanIrOptions& options);

}  // namespace kiln::tools
