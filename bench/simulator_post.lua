-- wrk script: one canned non-streaming chat request, keep-alive.
-- wrk -t1 -c32 -d5s -s bench/simulator_post.lua http://127.0.0.1:9101/v1/chat/completions
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}]}'
