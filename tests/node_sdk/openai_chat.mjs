// Chat completions, embeddings and models with the official openai Node SDK.
import OpenAI from 'openai';
import { apiKey, baseURL, runCases } from './common.mjs';

const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey, maxRetries: 0, timeout: 20000 });
const model = process.env.MH_CHAT_MODEL;
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const CALL = 'call get_weather {"city":"Lima"}';

await runCases({
  async unary() {
    const { data, response } = await client.chat.completions
      .create({ model, messages: [{ role: 'user', content: 'Hello from node unary' }] })
      .withResponse();
    return {
      id: data.id,
      object: data.object,
      model: data.model,
      content: data.choices[0].message.content,
      role: data.choices[0].message.role,
      finish_reason: data.choices[0].finish_reason,
      usage: data.usage,
      request_id: data._request_id ?? null,
      content_type: response.headers.get('content-type'),
    };
  },
  async stream_with_usage() {
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Hello from node stream' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    return {
      ids: [...new Set(chunks.map((c) => c.id))],
      objects: [...new Set(chunks.map((c) => c.object))],
      content: chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''),
      finish_reasons: chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean),
      usage_chunks: chunks.filter((c) => c.usage).map((c) => ({ choices: c.choices.length, usage: c.usage })),
    };
  },
  async stream_helper() {
    // The SDK's ChatCompletionStream accumulates the chunks itself and checks their order.
    const stream = client.chat.completions.stream({
      model,
      messages: [{ role: 'user', content: 'Hello from node helper' }],
      stream_options: { include_usage: true },
    });
    const final = await stream.finalChatCompletion();
    return { id: final.id, content: final.choices[0].message.content, usage: final.usage };
  },
  async tool_calls() {
    const messages = [{ role: 'user', content: CALL }];
    const first = await client.chat.completions.create({ model, messages, tools: [WEATHER] });
    const message = first.choices[0].message;
    const call = message.tool_calls[0];
    messages.push(message, { role: 'tool', tool_call_id: call.id, content: 'foggy, 17C' });
    const second = await client.chat.completions.create({ model, messages, tools: [WEATHER] });
    return {
      finish_reason: first.choices[0].finish_reason,
      call: { id: call.id, type: call.type, name: call.function.name, arguments: call.function.arguments },
      answer: second.choices[0].message.content,
    };
  },
  async tool_calls_streamed() {
    const stream = client.chat.completions.stream({
      model,
      messages: [{ role: 'user', content: CALL }],
      tools: [WEATHER],
    });
    const final = await stream.finalChatCompletion();
    const call = final.choices[0].message.tool_calls[0];
    return {
      finish_reason: final.choices[0].finish_reason,
      call: { id: call.id, type: call.type, name: call.function.name, arguments: call.function.arguments },
    };
  },
  async bad_request() {
    await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], temperature: 7 });
    return 'accepted';
  },
  async unknown_model() {
    await client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] });
    return 'accepted';
  },
  async bad_key() {
    const stranger = new OpenAI({ baseURL: baseURL + '/v1', apiKey: 'not-a-key', maxRetries: 0 });
    await stranger.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] });
    return 'accepted';
  },
  async embeddings() {
    // The SDK asks for base64 unless told otherwise, and decodes it into floats.
    const input = ['node embeddings one', 'node embeddings two'];
    const asked = await client.embeddings.create({ model: process.env.MH_EMBED_MODEL, input });
    const floats = await client.embeddings.create({
      model: process.env.MH_EMBED_MODEL,
      input,
      encoding_format: 'float',
    });
    return {
      object: asked.object,
      model: asked.model,
      indexes: asked.data.map((d) => d.index),
      vectors: asked.data.map((d) => d.embedding),
      float_vectors: floats.data.map((d) => d.embedding),
      usage: asked.usage,
    };
  },
  async models() {
    const ids = [];
    for await (const m of client.models.list()) ids.push({ id: m.id, object: m.object, owned_by: m.owned_by });
    const one = await client.models.retrieve(model);
    return { ids, one: { id: one.id, object: one.object, created: one.created } };
  },
});
