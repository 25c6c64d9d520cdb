#pragma once
/// Out-of-distribution evaluation sets: inputs a chest X-ray model must not
/// score silently. Built from files in ../shared and from in-distribution
/// test images transformed (rotated, inverted, cropped, blurred), plus
/// synthetic noise and rendered text pages. Used by the OOD benchmark, the
/// real-data OOD test and the study report.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cxr/data/image_io.h"

namespace cxr::evaluate {

struct OodSet {
  std::string name;         ///< short id, e.g. "rotated-90"
  std::string description;  ///< one sentence for reports
  /// true for inputs that are obviously not a frontal chest X-ray (photos,
  /// noise, text, another body part, rotated, inverted): the goal is
  /// to flag >= 99 % of these.
  bool obvious = true;
  /// Full-resolution decoded images, as data::read_gray returns them (so
  /// input checks see the real size, aspect ratio and colour).
  std::vector<data::GrayImage> images;
  /// Where each image came from (file, and the transform applied).
  std::vector<std::string> sources;
};

struct OodSetOptions {
  /// The ../shared folder (weights/test_images, data/dicom).
  std::string shared_dir;
  /// In-distribution images to transform (e.g. the cxr-seed test split).
  std::vector<std::string> test_files;
  /// At most this many images per transformed/synthetic set: test files
  /// are picked by a seeded shuffle (0 = all of them; 200 noise images and
  /// 40 text pages). Text pages are capped at 40.
  int max_per_set = 200;
  uint64_t seed = 7;
};

/// Builds every set whose inputs are available, in this order:
/// - "imagenet-photos": SHARED/weights/test_images/*.{png,bmp} (sorted),
///   each as is, mirrored and centre-cropped to 70 % (info.chroma set; the
///   crop's chroma is measured on the crop);
/// - "abdomen-dicom": SHARED/data/dicom/nhsx-sample.dcm as is, mirrored,
///   centre-cropped to 75 % and both;
/// - "other-dicom": SHARED/data/dicom/pydicom/*.dcm that decode, each
///   distinct image once (the MR transfer-syntax copies share pixels);
/// - "rotated-90", "inverted", "cropped", "blurred": the same pick of test
///   files, transformed;
/// - "noise", "text-page": synthetic, seeded.
/// DICOM files are read in process by data::read_gray (DCMTK; first frame,
/// the file's first VOI window, else the min-max of its values; see
/// docs/data-input.md); their info.format is "dicom". A set whose sources
/// are absent (no ../shared, a cxr built without DCMTK, no test files) is
/// left out, and `notes` (if given) says why; pydicom files that cannot be
/// decoded (JPEG 2000, truncated) are skipped and named in a note.
/// Throws DataError for unreadable files that do exist (a photo, a test
/// file, or nhsx-sample.dcm that cannot be decoded).
std::vector<OodSet> make_ood_sets(const OodSetOptions& options,
                                  std::vector<std::string>* notes = nullptr);

}  // namespace cxr::evaluate

namespace cxr::evaluate {

struct OodEvalOptions {
  std::string run_dir;
  /// ../shared (photos, DICOM files); "" = only the sets made from the test
  /// split and the synthetic ones.
  std::string shared_dir;
  /// Data root ("" = the run's); its test split is the in-distribution
  /// reference and the source of the transformed sets.
  std::string data_root;
  int max_per_set = 200;
  /// The in-distribution reference and source of the transformed sets:
  /// "test", or "val" to compare detector designs without touching test.
  std::string split = "test";
  std::string device = "auto";
  /// Output folder ("" = RUN/eval-ood).
  std::string out_dir;
};

/// Scores the run's test split (as files, with the input checks) and every
/// OOD set with the run's Predictor; writes ood.json: per set the share
/// flagged (by the input checks, by the detector, in all) and the AUROC of
/// the detector's score against the test split. Returns ood.json.
nlohmann::json evaluate_ood(const OodEvalOptions& options);

/// Printable table of an ood.json.
std::string format_ood(const nlohmann::json& ood);

}  // namespace cxr::evaluate
