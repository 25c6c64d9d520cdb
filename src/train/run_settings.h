#pragma once
// Internal to src/train: what run.cpp takes from run_settings.cpp besides
// the public run_settings()/flag_of_setting() (cxr/train/run.h). Not
// installed.
#include <filesystem>

#include "cxr/train/run.h"

namespace cxr::train::detail {

// The options of the interrupted run in `dir`: a flag the user gave must
// agree with the saved value (training on with one value and recording
// another, or failing on a shape mismatch, are both wrong); the rest are
// taken from the saved run. ModelError when `dir` has no config.json,
// ConfigError naming the flag that differs.
RunOptions resumed_options(const RunOptions& given,
                           const std::filesystem::path& dir);

}  // namespace cxr::train::detail
