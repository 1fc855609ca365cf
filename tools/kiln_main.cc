// The `kiln` command line: wires the pipeline libraries into subcommands (tools/cmd_*.cc).
#include <CLI/CLI.hpp>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"kiln: a compiler-style LLM inference engine"};
  app.set_version_flag("--version", "kiln " KILN_VERSION);
  app.require_subcommand(1);
  int exit_code = 0;
  kiln::tools::add_ir_command(app, &exit_code);
  kiln::tools::add_run_command(app, &exit_code);
  kiln::tools::add_compile_command(app, &exit_code);
  kiln::tools::add_inspect_command(app, &exit_code);
  kiln::tools::add_bench_command(app, &exit_code);
  kiln::tools::add_serve_command(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
