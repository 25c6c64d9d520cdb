// The HTTP routes: the JSON API (health, models, predict), the embedded web
// page, 405 for other methods on known paths, and httplib's own errors as
// the same JSON error body.
#include "assets.h"
#include "internal.h"

namespace cxr::serve {

void Server::Impl::answer(httplib::Response& res,
                          int status,
                          const json& body) const {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(body.dump(), "application/json");
}

size_t Server::Impl::model_index(const httplib::Request& req) const {
  if (!req.has_param("model")) return 0;
  const std::string id = req.get_param_value("model");
  std::string ids;
  for (size_t i = 0; i < models.size(); ++i) {
    if (models[i].id == id) return i;
    ids += (i ? ", " : "") + models[i].id;
  }
  throw HttpError{404, "unknown model '" + id + "'; use one of: " + ids +
                           " (GET /api/v1/models)"};
}

json Server::Impl::predict(const httplib::Request& req,
                           Clock::time_point start) {
  const size_t mi = model_index(req);
  const bool maps = flag_param(req, "maps");
  const bool preview = flag_param(req, "preview");
  const std::vector<Upload> files = uploads(req);
  // Decoded here, in the handler's thread, so the worker only runs models.
  const Decoded d = decode_uploads(files, o.limits);

  auto job = std::make_shared<Job>();
  job->model = mi;
  job->maps = maps;
  job->deadline = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(o.deadline_s));
  for (size_t i : d.ok) job->images.push_back(d.images[i]);
  if (Clock::now() > job->deadline) {
    throw HttpError{504,
                    "decoding the upload took longer than the deadline "
                    "of " +
                        json(o.deadline_s).dump() +
                        " s (server flag --deadline); send fewer or "
                        "smaller files"};
  }
  job = submit(job);

  const Model& m = models[mi];
  const double threshold = m.predictor->calibrated_threshold();
  json results = json::array();
  size_t k = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (!d.errors[i].empty()) {
      results.push_back({{"name", files[i].name}, {"error", d.errors[i]}});
      continue;
    }
    results.push_back(prediction_json(files[i], d.images[i], job->out[k++],
                                      threshold, maps, preview));
  }
  return {{"model", m.id}, {"results", results}};
}

void Server::Impl::api_routes() {
  auto guard = [this](auto body) {
    return [this, body](const httplib::Request& req, httplib::Response& res) {
      try {
        body(req, res);
      } catch (const HttpError& e) {
        if (e.status == 503) res.set_header("Retry-After", "1");
        answer(res, e.status, {{"error", one_line(e.message)}});
      } catch (const std::exception& e) {
        answer(res, 500,
               {{"error", one_line(std::string("internal error: ") + e.what()) +
                              "; please report it"}});
      } catch (...) {
        answer(res, 500, {{"error", "internal error; please report it"}});
      }
    };
  };
  http.Get("/api/v1/health",
           guard([this](const httplib::Request&, httplib::Response& res) {
             size_t waiting;
             {
               std::lock_guard<std::mutex> lock(mu);
               waiting = queue.size();
             }
             answer(res, 200,
                    {{"status", "ok"},
                     {"models", models.size()},
                     {"queue",
                      {{"waiting", waiting}, {"capacity", o.queue_capacity}}}});
           }));
  http.Get("/api/v1/models",
           guard([this](const httplib::Request&, httplib::Response& res) {
             json list = json::array();
             for (const auto& m : models) list.push_back(m.info);
             answer(res, 200, {{"models", list}});
           }));
  http.Post("/api/v1/predict",
            guard([this](const httplib::Request& req, httplib::Response& res) {
              const auto start = Clock::now();
              answer(res, 200, predict(req, start));
            }));
}

void Server::Impl::asset_routes() {
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    const WebAsset& a = kWebAssets[i];
    auto serve_asset = [a](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.mime);
    };
    http.Get(a.path, serve_asset);
    if (std::string(a.path) == "/index.html") http.Get("/", serve_asset);
  }
}

// The other methods on known paths: 405 with the one that works.
void Server::Impl::method_routes() {
  auto wrong = [this](const std::string& allow) {
    return [this, allow](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allow);
      answer(res, 405,
             {{"error", req.method + " " + req.path +
                            " is not supported; use " + allow}});
    };
  };
  std::vector<std::pair<std::string, std::string>> known = {
      {"/api/v1/health", "GET"},
      {"/api/v1/models", "GET"},
      {"/api/v1/predict", "POST"},
      {"/", "GET"}};
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    known.emplace_back(kWebAssets[i].path, "GET");
  }
  for (const auto& [path, allow] : known) {
    if (allow != "POST") http.Post(path, wrong(allow));
    if (allow != "GET") http.Get(path, wrong(allow));
    http.Put(path, wrong(allow));
    http.Patch(path, wrong(allow));
    http.Delete(path, wrong(allow));
  }
}

// Everything httplib answers itself (404, 413, 400 on a malformed request)
// gets the same JSON error body as the handlers' errors.
void Server::Impl::error_handlers() {
  http.set_error_handler([this](const httplib::Request& req,
                                httplib::Response& res) {
    if (!res.body.empty()) return;
    const int status = res.status;
    std::string msg;
    if (status == 404) {
      msg = "no such path: " + req.path +
            "; the API is under /api/v1 (health, models, predict) and the "
            "page is at /";
    } else if (status == 413) {
      msg = "the request body is larger than the server's limit of " +
            std::to_string(o.max_body_bytes) +
            " bytes (server flag --max-body-mb); send fewer or smaller files";
    } else if (status == 400) {
      msg = "malformed request to " + req.path +
            "; send the image as the body or as multipart/form-data 'file' "
            "parts";
    } else {
      msg = "request to " + req.path + " failed with HTTP " +
            std::to_string(status);
    }
    answer(res, status, {{"error", one_line(msg)}});
  });
  http.set_exception_handler([this](const httplib::Request&,
                                    httplib::Response& res,
                                    std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    answer(res, 500,
           {{"error",
             one_line("internal error: " + what) + "; please report it"}});
  });
}

void Server::Impl::routes() {
  // The token guards the API but health (for monitors) and the page's own
  // files (they hold no data; the page sends the token it was opened with).
  // Checked before httplib reads a request's body, so a caller without
  // the token cannot make the server read large uploads.
  http.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (req.path.rfind("/api/", 0) != 0 || req.path == "/api/v1/health" ||
            authorised(req)) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        // The unread body would be taken for the next request on this
        // connection.
        res.set_header("Connection", "close");
        answer(res, 401,
               {{"error",
                 "this server needs its token: send 'Authorization: Bearer "
                 "TOKEN' or add ?token=TOKEN to the URL"}});
        return httplib::Server::HandlerResponse::Handled;
      });
  api_routes();
  asset_routes();
  method_routes();
  error_handlers();
}

}  // namespace cxr::serve
