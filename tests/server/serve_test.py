#!/usr/bin/env python3
"""`kiln serve` on loopback with SmolLM2: the real `openai` client (chat and completions, streamed
and whole), 32 concurrent clients against the same requests run alone, a malformed-request suite
(every bad request a 4xx with an OpenAI error body, the server serving on, no pages leaked per
/metrics), client disconnects (streamed or whole) cancelling the request and freeing its pages,
429 from a full queue, 400 for a request that can never fit, and SIGTERM draining.

Run by ctest (tests/CMakeLists.txt): serve_test.py --kiln <kiln binary>. Exits 77 (skipped) when
the model or the openai package is missing. Only 127.0.0.1 is ever contacted.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

MODEL = os.path.join(os.environ.get("KILN_CACHE", os.path.expanduser("~/.cache/kiln")), "models",
                     "SmolLM2-135M-Instruct.Q4_1.gguf")
KILN = None
SKIP = 77


class Server:
    """A `kiln serve` child process on an ephemeral loopback port."""

    def __init__(self, *flags):
        self.proc = subprocess.Popen([KILN, "serve", MODEL, "--port", "0", "--threads", "2",
                                      *flags], stderr=subprocess.PIPE, text=True)
        self.log = []
        deadline = time.time() + 120
        self.port = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("kiln serve did not start:\n" + "".join(self.log))
        # Keep draining stderr so the child never blocks on a full pipe.
        self._drain = concurrent.futures.ThreadPoolExecutor(1)
        self._drain.submit(lambda: [self.log.append(l) for l in self.proc.stderr])
        self.base = f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    def metrics(self):
        status, data = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                out[name] = float(value)
        return out

    def wait_idle(self, timeout=30):
        """Waits until no request holds pages; returns the metrics then."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            if (m["kiln_num_requests_running"] == 0 and m["kiln_queue_depth"] == 0 and
                    m["kiln_kv_request_sequences"] == 0) or time.time() > deadline:
                return m
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._drain.shutdown(wait=True)
        self.proc.stderr.close()


def completion(server, prompt, max_tokens, **extra):
    status, data = server.request("POST", "/v1/completions",
                                  {"prompt": prompt, "max_tokens": max_tokens, **extra})
    assert status == 200, data
    return json.loads(data)["choices"][0]["text"]


PROMPTS = [f"Question {i}: what is {i} plus {i + 1}? Answer:" for i in range(32)]


class MainServer(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-context", "256", "--max-running", "32", "--kv-cache-mb", "96",
                            "--max-body-bytes", "65536", "--read-timeout", "2")
        import openai
        cls.client = openai.OpenAI(base_url=cls.server.base + "/v1", api_key="unused",
                                   max_retries=0, timeout=120)
        cls.model = cls.client.models.list().data[0].id

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def assert_no_leak(self):
        m = self.server.wait_idle()
        self.assertEqual(m["kiln_kv_request_sequences"], 0)
        self.assertEqual(m["kiln_num_requests_running"], 0)
        # What is still in use belongs to the prefix cache alone.
        self.assertEqual(m["kiln_kv_pages_used"], m["kiln_kv_pages_prefix_cached"])

    def test_openai_completions_stream_and_whole(self):
        whole = self.client.completions.create(model=self.model, prompt="The capital of France is",
                                               max_tokens=6, temperature=0)
        self.assertEqual(whole.choices[0].finish_reason, "length")
        self.assertEqual(whole.usage.completion_tokens, 6)
        self.assertGreater(len(whole.choices[0].text), 0)
        chunks = list(self.client.completions.create(model=self.model,
                                                     prompt="The capital of France is",
                                                     max_tokens=6, temperature=0, stream=True))
        self.assertEqual("".join(c.choices[0].text for c in chunks if c.choices),
                         whole.choices[0].text)
        self.assertEqual(chunks[-1].usage.completion_tokens, 6)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")

    def test_openai_chat_stream_and_whole(self):
        msgs = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Name a color."}]
        whole = self.client.chat.completions.create(model=self.model, messages=msgs, max_tokens=5,
                                                    temperature=0, seed=1)
        self.assertEqual(whole.choices[0].message.role, "assistant")
        text = whole.choices[0].message.content
        self.assertGreater(len(text), 0)
        stream = self.client.chat.completions.create(model=self.model, messages=msgs, max_tokens=5,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True})
        pieces, usage, finish = [], None, None
        for c in stream:
            if c.usage:
                usage = c.usage
            for ch in c.choices:
                if ch.delta.content:
                    pieces.append(ch.delta.content)
                if ch.finish_reason:
                    finish = ch.finish_reason
        self.assertEqual("".join(pieces), text)
        self.assertEqual(usage.prompt_tokens, whole.usage.prompt_tokens)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)
        self.assertIn(finish, ("stop", "length"))
        # Sampled with a seed: the same answer twice.
        a, b = (self.client.chat.completions.create(model=self.model, messages=msgs, max_tokens=5,
                                                    temperature=0.9, top_p=0.9, seed=42,
                                                    extra_body={"top_k": 20})
                for _ in range(2))
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)

    def test_stop_string_cuts_the_text(self):
        full = completion(self.server, "1, 2, 3, 4,", 8)
        self.assertIn(",", full)
        cut_at = full.index(",")
        status, data = self.server.request(
            "POST", "/v1/completions",
            {"prompt": "1, 2, 3, 4,", "max_tokens": 8, "stop": [","]})
        body = json.loads(data)
        self.assertEqual(body["choices"][0]["text"], full[:cut_at])
        self.assertEqual(body["choices"][0]["finish_reason"], "stop")

    def test_a_stream_has_a_chunk_per_token_even_while_text_is_held_back(self):
        full = completion(self.server, "The capital of France is", 8, ignore_eos=True)
        self.assertGreater(len(full), 3)
        # A stop string that matches the text's tail but never completes: from there on the
        # text is held back (empty chunks), and released whole at the end.
        stop = full[len(full) // 3:] + "\u0001"
        chunks = list(self.client.completions.create(
            model=self.model, prompt="The capital of France is", max_tokens=8, temperature=0,
            stream=True, stop=[stop], extra_body={"ignore_eos": True}))
        tokens = [c for c in chunks if c.choices and c.choices[0].finish_reason is None]
        self.assertEqual(len(tokens), 8)  # one per generated token, timing every one
        self.assertGreater(sum(1 for c in tokens if c.choices[0].text == ""), 0)
        self.assertEqual("".join(c.choices[0].text for c in chunks if c.choices), full)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")
        self.assertGreater(len(chunks[-1].choices[0].text), 0)  # the held-back text, at the end

    def test_concurrent_clients_get_the_answers_they_get_alone(self):
        alone = [completion(self.server, p, 6) for p in PROMPTS]
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            together = list(pool.map(lambda p: completion(self.server, p, 6), PROMPTS))
        self.assertEqual(together, alone)
        self.assert_no_leak()

    def expect_error(self, status, body, path="/v1/completions", headers=None):
        got, data = self.server.request("POST", path, body, headers=headers)
        self.assertEqual(got, status, data)
        err = json.loads(data)["error"]
        self.assertIsInstance(err["message"], str)
        self.assertGreater(len(err["message"]), 0)
        self.assertIn("type", err)
        return err

    def test_malformed_requests_get_4xx_json_errors(self):
        self.expect_error(400, '{"prompt": "hi", "max_tokens": ')  # bad JSON
        self.expect_error(400, "[1, 2, 3]")  # not an object
        self.assertEqual(self.expect_error(400, {"prompt": "hi", "max_tokens": "5"})["param"],
                         "max_tokens")
        self.expect_error(400, {"prompt": "hi", "temperature": "hot"})
        self.expect_error(400, {"prompt": 5})
        self.expect_error(400, {"messages": "hello"}, path="/v1/chat/completions")
        self.expect_error(400, {"messages": [{"role": "user"}], "stream": "yes"},
                          path="/v1/chat/completions")
        self.expect_error(400, {"prompt": "hi", "max_tokens": -3})
        self.expect_error(400, {"prompt": "hi", "max_tokens": 0})
        self.assertIn("maximum context length",
                      self.expect_error(400, {"prompt": "hi", "max_tokens": 10**9})["message"])
        self.expect_error(400, {"prompt": "hi", "n": 2})
        self.assertEqual(self.expect_error(404, {"model": "gpt-5", "prompt": "hi"})["code"],
                         "model_not_found")
        self.assertIn("maximum context length",
                      self.expect_error(400, {"prompt": "word " * 400, "max_tokens": 4})["message"])
        self.expect_error(400, b'{"prompt": "\xff\xfe bad utf-8", "max_tokens": 2}')
        self.expect_error(413, {"prompt": "x" * 100000, "max_tokens": 2})
        self.expect_error(400, "[" * 20000 + "]" * 20000)  # deep nesting, under the size limit
        got, data = self.server.request("GET", "/v1/nope")
        self.assertEqual(got, 404)
        self.assertIn("error", json.loads(data))
        # The server still serves.
        self.assertGreater(len(completion(self.server, "Hello", 2)), 0)
        self.assert_no_leak()

    def test_slow_partial_request_is_dropped_and_others_still_served(self):
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
        s.settimeout(10)
        start = time.time()
        try:
            data = s.recv(4096)  # the server gives up after --read-timeout (2 s)
        except (ConnectionResetError, socket.timeout):
            data = b""
        self.assertLess(time.time() - start, 9)
        self.assertNotIn(b"200 OK", data)
        s.close()
        self.assertGreater(len(completion(self.server, "Hello", 2)), 0)

    def test_disconnect_mid_stream_cancels_and_frees_pages(self):
        before = self.server.metrics()["kiln_requests_cancelled_total"]
        s = socket.create_connection(("127.0.0.1", self.server.port))
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 200, "stream": True})
        s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        got = b""
        while got.count(b"data: ") < 3:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "the stream ended early")
            got += chunk
        s.close()
        m = self.server.wait_idle()
        self.assertEqual(m["kiln_requests_cancelled_total"], before + 1)
        self.assertLess(m["kiln_generation_tokens_total"], 200 + 1e9)
        self.assert_no_leak()

    def test_disconnect_while_waiting_for_a_whole_answer_cancels_and_frees_pages(self):
        # Non-streaming: nothing is written before the answer, so the server must notice the
        # closed socket itself. Once with a plain close (FIN), once with a reset (RST).
        for reset in (False, True):
            before = self.server.metrics()
            s = socket.create_connection(("127.0.0.1", self.server.port))
            body = json.dumps({"prompt": "Once upon a time", "max_tokens": 200,
                               "ignore_eos": True})
            s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
            # Wait until it generates (it holds pages), then go away.
            deadline = time.time() + 60
            while True:
                m = self.server.metrics()
                if m["kiln_generation_tokens_total"] >= before["kiln_generation_tokens_total"] + 3:
                    break
                self.assertLess(time.time(), deadline, "the request never started")
                time.sleep(0.02)
            self.assertGreater(m["kiln_kv_request_sequences"], 0)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            m = self.server.wait_idle()
            self.assertEqual(m["kiln_requests_cancelled_total"],
                             before["kiln_requests_cancelled_total"] + 1)
            self.assertEqual(m["kiln_requests_finished_total"],
                             before["kiln_requests_finished_total"])
            # Cancelled well before max_tokens ran out.
            self.assertLess(m["kiln_generation_tokens_total"],
                            before["kiln_generation_tokens_total"] + 200)
            self.assert_no_leak()
        # The server keeps serving, whole and streamed.
        self.assertGreater(len(completion(self.server, "Hello", 2)), 0)
        self.assertEqual(self.server.metrics()["kiln_requests_finished_total"],
                         m["kiln_requests_finished_total"] + 1)

    def test_models_health_and_metrics(self):
        status, data = self.server.request("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(data)["data"][0]["id"], self.model)
        self.assertEqual(self.server.request("GET", "/health")[0], 200)
        status, data = self.server.request("GET", "/metrics")
        text = data.decode()
        for name in ("kiln_queue_depth", "kiln_num_requests_running", "kiln_num_requests_waiting",
                     "kiln_kv_pages_used", "kiln_kv_pages_free", "kiln_prefix_cache_hit_rate",
                     "kiln_prompt_tokens_total", "kiln_generation_tokens_total",
                     "kiln_time_to_first_token_seconds_bucket",
                     "kiln_inter_token_latency_seconds_count"):
            self.assertIn(name, text)


class KvCacheFlags(unittest.TestCase):
    def test_kv_cache_gb_sizes_the_pool_as_the_same_megabytes_do(self):
        pages = []
        for flags in (("--kv-cache-mb", "96"), ("--kv-cache-gb", "0.09375"),
                      ("--kv-cache-mb", "48")):
            server = Server("--max-context", "256", *flags)
            try:
                pages.append(server.metrics()["kiln_kv_pages_total"])
            finally:
                server.stop()
        self.assertEqual(pages[0], pages[1])
        self.assertGreater(pages[0], pages[2])


class SmallServer(unittest.TestCase):
    """A server with one running slot, a queue of one and 8 KV pages."""

    def test_full_queue_429_never_fits_400_and_sigterm_drains(self):
        server = Server("--max-context", "256", "--max-running", "1", "--max-queue", "1",
                        "--kv-pages", "8")
        try:
            err = json.loads(server.request("POST", "/v1/completions",
                                            {"prompt": "word " * 100, "max_tokens": 100})[1])
            self.assertIn("the whole pool has 8 pages", err["error"]["message"])

            def long_request(_):
                return server.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 24})

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                results = list(pool.map(long_request, range(6)))
            codes = sorted(code for code, _ in results)
            self.assertIn(200, codes)
            self.assertIn(429, codes)
            for code, data in results:
                if code == 429:
                    self.assertEqual(json.loads(data)["error"]["type"], "rate_limit_exceeded")

            # SIGTERM while a stream is in flight: it still completes, then the server exits.
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request("POST", "/v1/completions",
                         json.dumps({"prompt": "Once", "max_tokens": 12, "stream": True}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            first = resp.readline()
            self.assertTrue(first.startswith(b"data: "))
            server.proc.send_signal(signal.SIGTERM)
            rest = resp.read().decode()
            self.assertIn('"finish_reason":"length"', rest)
            self.assertTrue(rest.rstrip().endswith("data: [DONE]"))
            conn.close()
            self.assertEqual(server.proc.wait(30), 0)
        finally:
            server.stop()


def main():
    global KILN
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    args, rest = ap.parse_known_args()
    KILN = args.kiln
    if not os.path.exists(MODEL):
        print(f"SKIP: {MODEL} is missing (scripts/fetch-model.sh fetches it)")
        return SKIP
    try:
        import openai  # noqa: F401
    except ImportError:
        print("SKIP: the openai package is missing (scripts/install-deps.sh installs it)")
        return SKIP
    prog = unittest.main(argv=[sys.argv[0], *rest], exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
