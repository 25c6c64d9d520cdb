// The worker queue: one thread owns the Predictors and runs every model
// call (LibTorch modules are never called concurrently); handlers wait for
// their job up to its deadline, and a full queue is refused at once.
#include "internal.h"

namespace cxr::serve {

void Server::Impl::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu);
      work_cv.wait(lock, [&] { return worker_stop || !queue.empty(); });
      if (worker_stop) return;
      job = queue.front();
      queue.pop_front();
      if (Clock::now() > job->deadline) {
        job->state = Job::kExpired;
        done_cv.notify_all();
        continue;
      }
      job->state = Job::kRunning;
    }
    if (o.before_job) o.before_job();
    std::vector<infer::Prediction> out;
    std::string error;
    try {
      infer::PredictOptions po;
      po.maps = job->maps;
      out = models[job->model].predictor->predict(job->images, po);
    } catch (const c10::Error& e) {
      error = e.what_without_backtrace();
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown error";
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      job->out = std::move(out);
      job->error = std::move(error);
      job->state = job->error.empty() ? Job::kDone : Job::kFailed;
    }
    done_cv.notify_all();
  }
}

// Still queued: take it out so the worker does not spend time on an answer
// nobody waits for. A running job finishes and is dropped. Called with `mu`
// held.
void Server::Impl::take_out(const std::shared_ptr<Job>& job) {
  for (auto it = queue.begin(); it != queue.end(); ++it) {
    if (*it == job) {
      queue.erase(it);
      return;
    }
  }
}

std::shared_ptr<Job> Server::Impl::submit(std::shared_ptr<Job> job) {
  std::unique_lock<std::mutex> lock(mu);
  if (worker_stop) {
    throw HttpError{503, "the server is shutting down; retry on another"};
  }
  if (static_cast<int>(queue.size()) >= o.queue_capacity) {
    throw HttpError{503, "the model's queue is full (" +
                             std::to_string(o.queue_capacity) +
                             " requests waiting); retry in a second or "
                             "start the server with a larger --queue"};
  }
  queue.push_back(job);
  work_cv.notify_one();
  const bool finished = done_cv.wait_until(lock, job->deadline, [&] {
    return job->state == Job::kDone || job->state == Job::kFailed ||
           job->state == Job::kExpired || worker_stop;
  });
  if (!finished || job->state == Job::kExpired) {
    take_out(job);
    throw HttpError{
        504, "the model did not answer within the deadline of " +
                 json(o.deadline_s).dump() +
                 " s (server flag --deadline); retry later or send fewer "
                 "files"};
  }
  if (job->state == Job::kFailed) {
    throw HttpError{500, "the model failed on this request: " + job->error};
  }
  if (job->state != Job::kDone) {
    throw HttpError{503, "the server is shutting down; retry on another"};
  }
  return job;
}

}  // namespace cxr::serve
