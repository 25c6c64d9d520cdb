// cxr serve: the HTTP server and web page around the Predictor
// (docs/serve.md).
#include <iostream>

#include "cli.h"
#include "cxr/common/precision.h"
#include "cxr/serve/server.h"

namespace cxr::cli {
namespace {

// A limit of the server: a request past it is refused with `http_status`,
// which its --help names.
template <typename T>
void add_limit(CLI::App& cmd,
               const std::string& name,
               T& value,
               const std::string& what,
               int http_status,
               const CLI::Validator& check) {
  add_checked(cmd, name, value,
              what + " (more: HTTP " + std::to_string(http_status) + ")",
              check);
}

}  // namespace

void register_serve(CLI::App& app) {
  struct Flags {
    serve::ServeOptions serve;
    RuntimeFlags runtime;
    double max_body_mb = 64;
  };
  auto f = std::make_shared<Flags>();
  f->runtime.device = "cpu";
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve runs over HTTP: a web page and a JSON API (docs/serve.md)");
  cmd->add_option("runs", f->serve.runs,
                  "run folders from cxr train (the first is the default "
                  "model; ids are the folder names)")
      ->required();
  add_default(*cmd, "--host", f->serve.host,
              "address to listen on; other than 127.0.0.1, ::1 or "
              "localhost needs --token");
  add_checked(*cmd, "--port", f->serve.port, "port, 0 = any free port",
              integer_in(0, 65535));
  cmd->add_option("--token", f->serve.token,
                  "secret the API asks for (Authorization: Bearer TOKEN or "
                  "?token=TOKEN)");
  add_limit(*cmd, "--max-body-mb", f->max_body_mb,
            "largest request body in MiB", 413, number_in(0, 4096, true));
  add_limit(*cmd, "--queue", f->serve.queue_capacity,
            "requests that may wait for the model", 503, integer_in(1, 100000));
  add_limit(*cmd, "--deadline", f->serve.deadline_s,
            "seconds a request may take", 504, number_in(0, 86400, true));
  add_checked(*cmd, "--exit-after", f->serve.exit_after_s,
              "stop after this many seconds (0 = until Ctrl-C/SIGTERM)",
              number_in(0, 1e9));
  add_checked(*cmd, "--http-threads", f->serve.http_threads,
              "threads that read and decode requests", integer_in(1, 256));
  add_runtime_flags(*cmd, f->runtime);
  cmd->callback([f] {
    auto o = f->serve;
    o.device = f->runtime.device;
    o.threads = f->runtime.threads;
    // The worker thread's forward passes read it (common/precision.h).
    set_precision(parse_precision(f->runtime.precision, f->runtime.device));
    o.max_body_bytes =
        std::max<int64_t>(1, static_cast<int64_t>(f->max_body_mb * 1048576.0));
    serve::Server server(o);
    const int port = server.bind();
    std::string ids;
    for (const auto& id : server.model_ids()) {
      ids += (ids.empty() ? "" : ", ") + id;
    }
    const bool v6 = o.host.find(':') != std::string::npos;
    std::cout << "cxr serve: listening on http://"
              << (v6 ? "[" + o.host + "]" : o.host) << ":" << port
              << "/ (models: " << ids << ")" << std::endl;
    server.run();
  });
}

}  // namespace cxr::cli
