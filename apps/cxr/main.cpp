// cxr: the command-line entry point. Parses flags and dispatches; every
// subcommand lives in its own file and calls one core-library entry point.
#include <iostream>

#include "cli.h"
#include "cxr/common/error.h"
#include "cxr/common/runtime.h"
#include "cxr/version.h"

namespace {

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

}  // namespace

int main(int argc, char** argv) {
  cxr::configure_allocator();
  CLI::App app{
      "cxr: COVID-19 assisted diagnosis from chest X-rays (research use only, "
      "not for clinical decisions)"};
  app.set_version_flag("--version", std::string("cxr ") + cxr::kVersion);
  app.require_subcommand(1);
  app.fallthrough();
  cxr::cli::register_explore(app);
  cxr::cli::register_train(app);
  cxr::cli::register_evaluate(app);
  cxr::cli::register_predict(app);
  cxr::cli::register_explain(app);
  cxr::cli::register_tune(app);
  cxr::cli::register_study(app);
  cxr::cli::register_report(app);
  cxr::cli::register_calibrate(app);
  cxr::cli::register_serve(app);
  cxr::cli::set_command_line(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive as "errors" with exit code 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    // One line, like every other error, pointing at the help of the
    // subcommand being parsed (CLI11 would print its message and a second
    // "Run with --help" line).
    std::string help = "cxr --help";
    std::string what = first_line(e.what());
    const auto subs = app.get_subcommands();
    if (!subs.empty()) {
      help = "cxr " + subs.back()->get_name() + " --help";
    } else {
      // CLI11 answers a misspelt subcommand with "A subcommand is
      // required": name the word instead (the top level has only flags).
      for (int i = 1; i < argc; ++i) {
        if (argv[i][0] == '-') continue;
        const std::string word = argv[i];
        const auto known = app.get_subcommands(
            [&](const CLI::App* c) { return c->check_name(word); });
        if (known.empty()) what = "unknown subcommand '" + word + "'";
        break;
      }
    }
    std::cerr << "cxr: error: " << what << "; see " << help << "\n";
    return static_cast<int>(cxr::ExitCode::kUsage);
  } catch (const cxr::Error& e) {
    std::cerr << "cxr: error: " << first_line(e.what()) << "\n";
    return static_cast<int>(e.exit_code());
  } catch (const c10::Error& e) {
    std::cerr << "cxr: error: " << first_line(e.what_without_backtrace())
              << "\n";
    return static_cast<int>(cxr::ExitCode::kInternal);
  } catch (const std::exception& e) {
    std::cerr << "cxr: error: " << first_line(e.what()) << "\n";
    return static_cast<int>(cxr::ExitCode::kInternal);
  }
  return 0;
}
