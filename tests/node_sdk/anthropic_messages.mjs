// The gateway's Anthropic door (/v1/messages) with the official @anthropic-ai/sdk: unary, streamed
// (raw events and the SDK's MessageStream), a tool call, count_tokens, models and an error.
import Anthropic from '@anthropic-ai/sdk';
import { apiKey, baseURL, runCases } from './common.mjs';

const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
const model = process.env.MH_CLAUDE_MODEL;
const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

function summary(m) {
  return {
    id: m.id,
    type: m.type,
    role: m.role,
    model: m.model,
    content: m.content,
    stop_reason: m.stop_reason,
    stop_sequence: m.stop_sequence,
    usage: m.usage,
  };
}

await runCases({
  async unary() {
    const { data, request_id } = await client.messages
      .create({ model, max_tokens: 256, messages: [{ role: 'user', content: 'Hello from node anthropic' }] })
      .withResponse();
    return { ...summary(data), request_id };
  },
  async stream_events() {
    const stream = await client.messages.create({
      model,
      max_tokens: 256,
      messages: [{ role: 'user', content: 'Hello from node anthropic stream' }],
      stream: true,
    });
    const events = [];
    for await (const event of stream) events.push(event);
    return {
      types: events.map((e) => e.type),
      text: events
        .filter((e) => e.type === 'content_block_delta' && e.delta.type === 'text_delta')
        .map((e) => e.delta.text)
        .join(''),
      start: summary(events[0].message),
      delta: events.find((e) => e.type === 'message_delta') ?? null,
    };
  },
  async stream_helper() {
    // MessageStream accumulates the events into a Message and raises on any out of place.
    const stream = client.messages.stream({
      model,
      max_tokens: 256,
      messages: [{ role: 'user', content: 'Hello from node anthropic helper' }],
    });
    const texts = [];
    stream.on('text', (t) => texts.push(t));
    const final = await stream.finalMessage();
    return { texts: texts.join(''), final: summary(final) };
  },
  async tool_use() {
    const m = await client.messages.create({
      model,
      max_tokens: 256,
      tools: [WEATHER],
      tool_choice: { type: 'tool', name: 'get_weather' },
      messages: [{ role: 'user', content: 'What is the weather in Lima?' }],
    });
    return summary(m);
  },
  async tool_use_streamed() {
    // MessageStream joins the input_json_delta pieces and parses them into the block's input.
    const stream = client.messages.stream({
      model,
      max_tokens: 256,
      tools: [WEATHER],
      tool_choice: { type: 'tool', name: 'get_weather' },
      messages: [{ role: 'user', content: 'What is the weather in Lima, streamed?' }],
    });
    const types = [];
    stream.on('streamEvent', (e) => types.push(e.type + (e.delta?.type ? ':' + e.delta.type : '')));
    return { types, final: summary(await stream.finalMessage()) };
  },
  async count_tokens() {
    return await client.messages.countTokens({
      model,
      messages: [{ role: 'user', content: 'Hello from node anthropic count' }],
    });
  },
  async models() {
    const ids = [];
    for await (const m of client.models.list()) ids.push({ id: m.id, type: m.type });
    return ids;
  },
  async bad_request() {
    await client.messages.create({ model, max_tokens: -1, messages: [{ role: 'user', content: 'hi' }] });
    return 'accepted';
  },
  async unknown_model() {
    await client.messages.create({ model: 'no-such-model', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
    return 'accepted';
  },
});
