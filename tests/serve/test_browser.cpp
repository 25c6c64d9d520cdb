// The `cxr serve` page end to end in a real browser: headless Chromium,
// driven over the DevTools pipe (cdp_client.h), opens the page of a server
// started as a child process, uploads files through the file input as a
// user would, and what the page shows must be what the JSON API answers
// for the same files. Skips when Chromium is not installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <regex>
#include <sstream>

#include "cdp_client.h"
#include "cxr/data/image_io.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::TempDir;
using cxr::testing::cdp::Browser;
using cxr::testing::cdp::json;
using cxr::testing::cdp::Process;
using std::chrono::milliseconds;

// Every wait in the page is bounded by this.
constexpr milliseconds kWait(20000);

using cxr::testing::read_text;

/// One HTTP/1.1 POST on a fresh loopback connection (Connection: close):
/// status and body. A plain socket client rather than httplib: Debian's
/// httplib is a compiled library whose header needs the feature defines it
/// was built with, and the request is simple enough to write out.
struct HttpAnswer {
  int status = 0;
  std::string body;
};
HttpAnswer http_post(int port,
                     const std::string& target,
                     const std::string& content_type,
                     const std::string& body) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  timeval tv{60, 0};  // bounded: the server answers or the test fails
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string in;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (ok) {
    const std::string req =
        "POST " + target +
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type +
        "\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    for (size_t off = 0; ok && off < req.size();) {
      const ssize_t n =
          ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
      ok = n > 0;
      if (ok) off += static_cast<size_t>(n);
    }
    char buf[65536];
    for (ssize_t n; ok && (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      in.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  HttpAnswer a;
  const size_t head_end = in.find("\r\n\r\n");
  if (!ok || in.compare(0, 5, "HTTP/") != 0 || head_end == std::string::npos) {
    throw std::runtime_error("POST " + target + ": no HTTP answer (got " +
                             std::to_string(in.size()) + " bytes)");
  }
  a.status = std::stoi(in.substr(in.find(' ') + 1, 3));
  a.body = in.substr(head_end + 4);
  return a;
}

/// A minimal DICOM file (explicit VR little endian, Secondary Capture,
/// MONOCHROME2, 16 bits allocated, 12 stored, a full-range window) of `image`
/// ([H, W] in [0, 1]), written out by hand so the test needs no DICOM library.
std::string make_dicom(const torch::Tensor& image) {
  std::string ds;
  auto u16 = [](std::string& s, uint16_t v) {
    s.push_back(static_cast<char>(v & 0xff));
    s.push_back(static_cast<char>(v >> 8));
  };
  auto u32 = [&](std::string& s, uint32_t v) {
    u16(s, static_cast<uint16_t>(v & 0xffff));
    u16(s, static_cast<uint16_t>(v >> 16));
  };
  auto element = [&](std::string& s, uint16_t group, uint16_t elem,
                     const char* vr, std::string value) {
    if (value.size() % 2)
      value.push_back(vr[0] == 'U' && vr[1] == 'I' ? '\0' : ' ');
    u16(s, group);
    u16(s, elem);
    s.append(vr, 2);
    const std::string long_vr = "OBOWOFSQUTUN";
    bool is_long = false;
    for (size_t k = 0; k < long_vr.size(); k += 2) {
      is_long = is_long || long_vr.compare(k, 2, vr) == 0;
    }
    if (is_long) {
      u16(s, 0);
      u32(s, static_cast<uint32_t>(value.size()));
    } else {
      u16(s, static_cast<uint16_t>(value.size()));
    }
    s += value;
  };
  auto us = [&](uint16_t v) {
    std::string b;
    u16(b, v);
    return b;
  };
  const std::string sop_class = "1.2.840.10008.5.1.4.1.1.7";
  const std::string sop_instance = "1.2.826.0.1.3680043.2.1125.42.1";
  std::string meta;
  element(meta, 0x0002, 0x0001, "OB", std::string("\0\1", 2));
  element(meta, 0x0002, 0x0002, "UI", sop_class);
  element(meta, 0x0002, 0x0003, "UI", sop_instance);
  element(meta, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1");
  const int64_t h = image.size(0), w = image.size(1);
  const auto px =
      (image.clamp(0, 1) * 4095).round().to(torch::kInt32).contiguous();
  std::string pixels;
  for (int64_t k = 0; k < h * w; ++k) {
    u16(pixels, static_cast<uint16_t>(px.data_ptr<int32_t>()[k]));
  }
  element(ds, 0x0008, 0x0016, "UI", sop_class);
  element(ds, 0x0008, 0x0018, "UI", sop_instance);
  element(ds, 0x0008, 0x0060, "CS", "OT");
  element(ds, 0x0028, 0x0002, "US", us(1));
  element(ds, 0x0028, 0x0004, "CS", "MONOCHROME2");
  element(ds, 0x0028, 0x0010, "US", us(static_cast<uint16_t>(h)));
  element(ds, 0x0028, 0x0011, "US", us(static_cast<uint16_t>(w)));
  element(ds, 0x0028, 0x0100, "US", us(16));
  element(ds, 0x0028, 0x0101, "US", us(12));
  element(ds, 0x0028, 0x0102, "US", us(11));
  element(ds, 0x0028, 0x0103, "US", us(0));
  // A window that maps the stored 0..4095 linearly onto 0..1 (DICOM's
  // linear VOI function), so the DICOM shows the same pixels as its PNG.
  element(ds, 0x0028, 0x1050, "DS", "2048");
  element(ds, 0x0028, 0x1051, "DS", "4096");
  element(ds, 0x7FE0, 0x0010, "OW", pixels);
  std::string file(128, '\0');
  file += "DICM";
  std::string length;
  u32(length, static_cast<uint32_t>(meta.size()));
  element(file, 0x0002, 0x0000, "UL", length);
  return file + meta + ds;
}

/// `cxr serve RUN... --port 0` as a child: the port comes from the one line
/// it prints when listening. SIGTERM at the end (clean stop), --exit-after
/// as a safety net should the test process itself be killed.
class ServeProcess {
 public:
  ServeProcess(const std::vector<std::string>& runs, const fs::path& log) {
    Process::Options o;
    o.argv = {CXR_BINARY, "serve"};
    for (const auto& r : runs) o.argv.push_back(r);
    for (const char* a : {"--port", "0", "--exit-after", "120"}) {
      o.argv.push_back(a);
    }
    o.capture_stdout = true;
    o.log_path = log.string();
    o.stop_signal = SIGTERM;
    proc_ = std::make_unique<Process>(o);
    std::string line;
    // Loading the runs takes a few seconds on a busy machine.
    if (!proc_->read_line(&line, milliseconds(60000))) {
      throw std::runtime_error(
          "cxr serve printed no line within 60 s (or exited); its log: " +
          read_text(log));
    }
    std::smatch m;
    if (!std::regex_search(
            line, m, std::regex(R"(listening on http://([^/]+):(\d+)/)"))) {
      throw std::runtime_error("unexpected first line of cxr serve: " + line);
    }
    port_ = std::stoi(m[2]);
    url_ = "http://127.0.0.1:" + std::to_string(port_) + "/";
  }
  int port() const { return port_; }
  const std::string& url() const { return url_; }

 private:
  std::unique_ptr<Process> proc_;
  int port_ = 0;
  std::string url_;
};

/// The server, or null with `why` set when this cxr was built without it
/// (no cpp-httplib at configure time); any other failure throws.
std::unique_ptr<ServeProcess> start_serve(const std::vector<std::string>& runs,
                                          const fs::path& log,
                                          std::string* why) {
  try {
    return std::make_unique<ServeProcess>(runs, log);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find("without cpp-httplib") ==
        std::string::npos) {
      throw;
    }
    *why = e.what();
    return nullptr;
  }
}

/// The result rows of the page as JSON (name, state, data-p, data-ood and
/// the texts of .prob, .decision and .ood).
const char* kRows = R"(Array.from(document.querySelectorAll('tr.result')).map(
  r => ({name: r.dataset.name, state: r.dataset.state, p: r.dataset.p,
         ood: r.dataset.ood,
         prob: (r.querySelector('.prob') || {}).textContent,
         decision: (r.querySelector('.decision') || {}).textContent,
         oodText: ((r.querySelector('.ood') || {}).textContent || '').trim()})))";

/// The first number in `text` (a '%' after it divides by 100), and half a
/// unit of its last printed digit: what "shows P to that many decimals"
/// allows.
std::pair<double, double> shown_number(const std::string& text) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(R"((\d+(?:\.(\d+))?)\s*(%?))"))) {
    return {NAN, 0};
  }
  double v = std::stod(m[1]);
  double half = 0.5 * std::pow(10.0, -static_cast<double>(m[2].length()));
  if (m[3].length() > 0) {
    v /= 100;
    half /= 100;
  }
  return {v, half};
}

/// A tiny trained run (16 px baseline) and four uploads: a test image of
/// each class of its own data, the Normal one again as a 12-bit DICOM, and
/// a colour photograph-like picture (out of distribution: X-rays are gray).
struct Fixture {
  TempDir dir;
  std::string run;
  std::vector<fs::path> files;
  Fixture() {
    cxr::testing::make_tiny_dataset(dir / "data");
    // Trained long enough that the two classes get different P, so that a
    // row showing another file's answer would be noticed.
    auto o = cxr::testing::tiny_run_options(dir.path(), "run");
    o.model = cxr::testing::tiny_config();
    o.train = cxr::testing::tiny_train_options();
    cxr::train::train_run(o);
    run = o.out_dir;
    // The first test image of each class, copied under plain names.
    for (const char* c : {"Normal", "COVID"}) {
      std::vector<fs::path> pngs;
      for (const auto& e : fs::directory_iterator(dir / "data/test" / c)) {
        pngs.push_back(e.path());
      }
      std::sort(pngs.begin(), pngs.end());
      files.push_back(dir / "upload" / (std::string(c) + ".png"));
      fs::create_directories(files.back().parent_path());
      fs::copy_file(pngs.front(), files.back());
    }
    const auto normal = cxr::data::read_gray(files.front().string()).pixels;
    files.push_back(dir / "upload" / "Normal-12bit.dcm");
    cxr::testing::write_bytes(files.back(), make_dicom(normal));
    torch::manual_seed(5);
    auto photo = torch::rand({3, 4, 4}).repeat_interleave(8, 1);
    photo = photo.repeat_interleave(8, 2);  // saturated 8x8 colour blocks
    files.push_back(dir / "upload" / "photo.png");
    cxr::data::write_png(files.back().string(), photo);
  }
};

TEST(ServeBrowser, PageShowsWhatTheApiAnswersForUploadedFiles) {
  const std::string chromium = cxr::testing::cdp::find_chromium();
  if (chromium.empty()) {
    GTEST_SKIP() << "no chromium on PATH (Debian: apt-get install chromium); "
                    "the browser test needs it";
  }
  Fixture f;
  std::string why;
  const auto server = start_serve({f.run}, f.dir / "serve.log", &why);
  if (!server) GTEST_SKIP() << why;
  const ServeProcess& serve = *server;
  Browser b(chromium, f.dir.path(), 1280, 900, kWait);
  b.navigate(serve.url());
  b.wait_for(
      "(document.querySelector('#status') || {}).textContent === 'ready'",
      kWait);

  std::vector<std::string> paths;
  for (const auto& p : f.files) paths.push_back(p.string());
  b.set_files("#file-input", paths);
  const json rows = b.wait_for(
      std::string("(() => { const rows = ") + kRows +
          "; return rows.length === " + std::to_string(paths.size()) +
          " && rows.every(r => r.state !== 'pending') && rows; })()",
      kWait);

  // The API's answer for each file, sent as a raw body.
  for (const auto& file : f.files) {
    const std::string name = file.filename().string();
    SCOPED_TRACE(name);
    const bool dicom = file.extension() == ".dcm";
    const HttpAnswer res =
        http_post(serve.port(), "/api/v1/predict?name=" + name,
                  dicom ? "application/dicom" : "image/png", read_text(file));
    json row;
    for (const auto& r : rows) {
      if (r.value("name", "") == name) row = r;
    }
    ASSERT_FALSE(row.is_null()) << "no row for " << name << ": " << rows;
    if (res.status != 200) {
      // Only the DICOM may fail (a cxr built without DCMTK refuses it), and
      // the page must then show that error.
      EXPECT_TRUE(dicom && res.status == 422) << res.status << " " << res.body;
      EXPECT_EQ(row.value("state", ""), "error") << row;
      const std::string error = json::parse(res.body).at("error");
      EXPECT_NE(row.value("oodText", "").find("DICOM"), std::string::npos)
          << row << " vs " << error;
      std::printf("note: %s refused by the server: %s\n", name.c_str(),
                  error.c_str());
      continue;
    }
    const json want = json::parse(res.body).at("results").at(0);
    EXPECT_EQ(row.value("state", ""), "done") << row;
    const double p = want.at("p");
    // data-p carries P to 4 decimals; .prob shows it as the user reads it.
    EXPECT_NEAR(std::stod(row.value("p", "nan")), p, 0.5e-4 + 1e-9) << row;
    const auto [shown, half] = shown_number(row.value("prob", ""));
    EXPECT_NEAR(shown, p, half + 1e-9) << row;
    EXPECT_NE(
        row.value("decision", "").find(want.at("decision").get<std::string>()),
        std::string::npos)
        << row;
    const bool ood = !want.at("in_distribution").get<bool>();
    EXPECT_EQ(row.value("ood", ""), ood ? "1" : "0") << row;
    // The warning is shown exactly when the API flags the file, and names
    // its reasons.
    const std::string warning = row.value("oodText", "");
    EXPECT_EQ(warning.empty(), !ood) << row;
    for (const auto& reason : want.at("reasons")) {
      const std::string r = reason;
      const std::string code = r.substr(0, r.find(':'));
      EXPECT_NE(warning.find(code), std::string::npos) << row << " " << r;
    }
  }
  // The DICOM holds the Normal PNG's pixels (to 12 bits): the page shows
  // about the same P for both.
  {
    json png, dcm;
    for (const auto& r : rows) {
      if (r.value("name", "") == "Normal.png") png = r;
      if (r.value("name", "") == "Normal-12bit.dcm") dcm = r;
    }
    if (dcm.value("state", "") == "done") {
      EXPECT_NEAR(std::stod(dcm.value("p", "nan")),
                  std::stod(png.value("p", "nan")), 0.02)
          << png << "\n"
          << dcm;
    }
  }
  // The colour picture is flagged, and the page says why.
  {
    json photo;
    for (const auto& r : rows) {
      if (r.value("name", "") == "photo.png") photo = r;
    }
    EXPECT_EQ(photo.value("ood", ""), "1") << photo;
    EXPECT_NE(photo.value("oodText", "").find("colour"), std::string::npos)
        << photo;
  }

  // Clicking a row opens its detail with the image; a Grad-CAM map is
  // overlaid when chosen, and the opacity slider changes how it is drawn.
  b.evaluate(
      "document.querySelector('tr.result[data-name=\"COVID.png\"]')"
      ".click(); 1");
  b.wait_for(
      "(() => { const d = document.querySelector('#detail'); "
      "const i = document.querySelector('#detail-image'); "
      "return d && !d.hidden && d.offsetParent !== null && i && i.complete && "
      "i.naturalWidth > 0; })()",
      kWait);
  // A signature of what the overlay shows: its computed opacity, whether it
  // is displayed, and (canvas) a checksum of its pixels or (img) its source.
  const std::string overlay_state = R"((() => {
    const o = document.querySelector('#overlay');
    if (!o) return 'no #overlay';
    const cs = getComputedStyle(o);
    let content = '';
    if (o.tagName === 'CANVAS' && o.width > 0 && o.height > 0) {
      const d = o.getContext('2d').getImageData(0, 0, o.width, o.height).data;
      let s = 0; for (let k = 0; k < d.length; k += 4) s += d[k + 3] + d[k];
      content = 'px' + s;
    } else if (o.tagName === 'IMG') {
      content = (o.complete && o.naturalWidth > 0 ? 'img:' : 'none:') +
                o.src.length;
    }
    const shown = cs.display !== 'none' && cs.visibility !== 'hidden' &&
                  !o.hidden;
    return JSON.stringify({shown, opacity: cs.opacity, content});
  })())";
  const std::string choose = R"((value => {
    const t = document.querySelector('#map-toggle');
    if (t.tagName === 'SELECT') {
      t.value = value;
      t.dispatchEvent(new Event('input', {bubbles: true}));
      t.dispatchEvent(new Event('change', {bubbles: true}));
    } else {
      const r = t.querySelector('input[value="' + value + '"]') ||
                document.querySelector('input[name="map"][value="' + value + '"]');
      r.click();
    }
    return 1;
  }))";
  b.evaluate(choose + "('none')");
  const std::string none = b.evaluate(overlay_state);
  b.evaluate(choose + "('covid')");
  const std::string covid =
      b.wait_for("(() => { const s = " + overlay_state + "; return s !== " +
                     json(none).dump() + " && JSON.parse(s).shown && s; })()",
                 kWait);
  b.evaluate(R"((() => {
    const s = document.querySelector('#opacity');
    const lo = Number(s.min || 0), hi = Number(s.max || 100);
    const v = Number(s.value) > lo + 0.5 * (hi - lo) ? lo + 0.2 * (hi - lo)
                                                     : lo + 0.9 * (hi - lo);
    s.value = String(v);
    s.dispatchEvent(new Event('input', {bubbles: true}));
    s.dispatchEvent(new Event('change', {bubbles: true}));
    return 1;
  })())");
  b.wait_for("(() => { const s = " + overlay_state +
                 "; return s !== " + json(covid).dump() + " && s; })()",
             kWait);
  b.evaluate(choose + "('normal')");
  b.wait_for("(() => { const s = " + overlay_state +
                 "; return JSON.parse(s).shown && s; })()",
             kWait);

  // A screenshot of the whole page for whoever reads the test log.
  const fs::path shot =
      fs::path(CXR_BINARY).parent_path() / "test-artifacts" / "serve.png";
  b.screenshot(shot, true);
  std::printf("screenshot: %s\n", shot.string().c_str());
  EXPECT_GT(fs::file_size(shot), 1000u);

  const auto errors = b.page_errors();
  EXPECT_TRUE(errors.empty()) << ::testing::PrintToString(errors);
}

/// Not a check: makes docs/img/serve.png from real runs and files when asked
///   CXR_SERVE_SCREENSHOT=docs/img/serve.png
///   CXR_SERVE_SCREENSHOT_RUNS="study/baseline"
///   CXR_SERVE_SCREENSHOT_FILES="a.png b.png c.dcm"
///   build/tests/cxr_unit_tests --gtest_filter=ServeBrowser.DocsScreenshot
/// (the first file's detail is shown with its COVID map).
TEST(ServeBrowser, DocsScreenshot) {
  const char* out = std::getenv("CXR_SERVE_SCREENSHOT");
  const char* runs = std::getenv("CXR_SERVE_SCREENSHOT_RUNS");
  const char* files = std::getenv("CXR_SERVE_SCREENSHOT_FILES");
  if (!out || !runs || !files) {
    GTEST_SKIP() << "makes the docs screenshot when CXR_SERVE_SCREENSHOT, "
                    "CXR_SERVE_SCREENSHOT_RUNS and CXR_SERVE_SCREENSHOT_FILES "
                    "are set";
  }
  const std::string chromium = cxr::testing::cdp::find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "no chromium on PATH";
  auto words = [](const std::string& s) {
    std::vector<std::string> v;
    std::istringstream in(s);
    for (std::string w; in >> w;) v.push_back(fs::absolute(w).string());
    return v;
  };
  TempDir dir;
  std::string why;
  const auto server = start_serve(words(runs), dir / "serve.log", &why);
  if (!server) GTEST_SKIP() << why;
  const ServeProcess& serve = *server;
  Browser b(chromium, dir.path(), 1280, 900, kWait);
  b.navigate(serve.url());
  b.wait_for(
      "(document.querySelector('#status') || {}).textContent === 'ready'",
      kWait);
  const auto paths = words(files);
  b.set_files("#file-input", paths);
  b.wait_for(std::string("(() => { const rows = ") + kRows +
                 "; return rows.length === " + std::to_string(paths.size()) +
                 " && rows.every(r => r.state !== 'pending'); })()",
             milliseconds(60000));
  const std::string first = fs::path(paths.front()).filename().string();
  b.evaluate("document.querySelector('tr.result[data-name=" +
             json(first).dump() + "]').click(); 1");
  b.wait_for(
      "(() => { const i = document.querySelector('#detail-image'); "
      "return i && i.complete && i.naturalWidth > 0; })()",
      kWait);
  b.evaluate(R"((() => {
    const t = document.querySelector('#map-toggle');
    if (t.tagName === 'SELECT') {
      t.value = 'covid';
      t.dispatchEvent(new Event('change', {bubbles: true}));
    } else {
      t.querySelector('input[value="covid"]').click();
    }
    const s = document.querySelector('#opacity');
    const lo = Number(s.min || 0), hi = Number(s.max || 100);
    s.value = String(lo + 0.5 * (hi - lo));
    s.dispatchEvent(new Event('input', {bubbles: true}));
    return 1;
  })())");
  // The worklist and the detail rather than the page's header.
  b.evaluate("document.querySelector('#worklist-heading').scrollIntoView(); 1");
  std::this_thread::sleep_for(milliseconds(500));  // let the overlay draw
  b.screenshot(out);
  std::printf("screenshot: %s\n", out);
  EXPECT_TRUE(b.page_errors().empty());
}

}  // namespace
