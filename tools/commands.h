// Subcommands of the `kiln` CLI. Each add_*_command registers one subcommand whose callback stores
// the process exit code in `*exit_code` (CLI11 callbacks return nothing).
#pragma once

#include <CLI/CLI.hpp>

namespace kiln::tools {

void add_ir_command(CLI::App& app, int* exit_code);
void add_run_command(CLI::App& app, int* exit_code);
/// Subcommands laid out but not implemented yet: they say so and exit non-zero.
void add_pending_commands(CLI::App& app, int* exit_code);

}  // namespace kiln::tools
