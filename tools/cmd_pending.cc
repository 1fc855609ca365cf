// Subcommands whose implementation lands with later pipeline stages.
#include <iostream>

#include "tools/commands.h"

namespace kiln::tools {

void add_pending_commands(CLI::App& app, int* exit_code) {
  struct Pending {
    const char* name;
    const char* help;
  };
  for (Pending p : {Pending{"bench", "Benchmark kernels and end-to-end decode"}}) {
    CLI::App* cmd = app.add_subcommand(p.name, p.help);
    cmd->allow_extras();
    std::string name = p.name;
    cmd->callback([name, exit_code] {
      std::cerr << "kiln " << name << ": not implemented yet\n";
      *exit_code = 3;
    });
  }
}

}  // namespace kiln::tools
