// The Responses API with the official openai Node SDK: unary, streamed (raw events and the SDK's
// accumulating ResponseStream), background with retrieve, a previous_response_id chain, input items and
// input token counts.
import OpenAI from 'openai';
import { apiKey, baseURL, runCases } from './common.mjs';

const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey, maxRetries: 0, timeout: 20000 });
const model = process.env.MH_CHAT_MODEL;

function summary(r) {
  return {
    id: r.id,
    object: r.object,
    status: r.status,
    model: r.model,
    output_text: r.output_text,
    output_types: r.output.map((o) => o.type),
    usage: r.usage,
    previous_response_id: r.previous_response_id ?? null,
    background: r.background ?? null,
    created_at: r.created_at,
  };
}

await runCases({
  async unary() {
    return summary(await client.responses.create({ model, input: 'Hello from node responses' }));
  },
  async stream_events() {
    const stream = await client.responses.create({ model, input: 'Hello from node events', stream: true });
    const events = [];
    for await (const event of stream) events.push(event);
    const last = events[events.length - 1];
    return {
      types: events.map((e) => e.type),
      sequence_numbers: events.map((e) => e.sequence_number),
      deltas: events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''),
      done_text: events.find((e) => e.type === 'response.output_text.done')?.text ?? null,
      final: last?.response ? summary(last.response) : null,
    };
  },
  async stream_helper() {
    // ResponseStream rebuilds the response from the events and raises on any it cannot place.
    const stream = client.responses.stream({ model, input: 'Hello from node helper' });
    const types = [];
    stream.on('event', (e) => types.push(e.type));
    const final = await stream.finalResponse();
    return { types, final: summary(final) };
  },
  async background() {
    const started = await client.responses.create({ model, input: 'Hello from node background', background: true });
    let r = started;
    const deadline = Date.now() + 30000;
    while (['queued', 'in_progress'].includes(r.status) && Date.now() < deadline) {
      await new Promise((done) => setTimeout(done, 100));
      r = await client.responses.retrieve(started.id);
    }
    return { started: summary(started), retrieved: summary(r) };
  },
  async background_streamed() {
    // A background stream read whole, then again from after its fourth event (seq 3), as after a drop.
    const stream = await client.responses.create({
      model,
      input: 'Hello from node background stream',
      background: true,
      stream: true,
    });
    const events = [];
    for await (const event of stream) events.push(event);
    const resumed = await client.responses.retrieve(events[0].response.id, { stream: true, starting_after: 3 });
    const again = [];
    for await (const event of resumed) again.push(event);
    const final = events[events.length - 1].response;
    return {
      events: events.map((e) => [e.type, e.sequence_number]),
      again: again.map((e) => [e.type, e.sequence_number]),
      final: { ...summary(final), output_text: final.output[0]?.content?.[0]?.text ?? null },
    };
  },
  async chained() {
    const first = await client.responses.create({ model, input: 'Remember the word heron', store: true });
    const second = await client.responses.create({
      model,
      input: 'What was the word?',
      previous_response_id: first.id,
    });
    const items = [];
    for await (const item of client.responses.inputItems.list(second.id, { limit: 1 })) items.push(item);
    // inputTokens.count: the turn's prompt alone, then with the chain before it.
    const alone = await client.responses.inputTokens.count({ model, input: 'What was the word?' });
    const chained = await client.responses.inputTokens.count({
      model,
      input: 'What was the word?',
      previous_response_id: first.id,
    });
    return {
      first: summary(first),
      second: summary(second),
      input_items: items.map((i) => i.type + ':' + i.role),
      counted: { alone, chained },
    };
  },
  async input_items_paginated() {
    // CursorPage follows the last item's id as `after`, one item a page.
    const r = await client.responses.create({
      model,
      input: [
        { role: 'user', content: 'first' },
        { role: 'assistant', content: 'second' },
        { role: 'user', content: 'third' },
      ],
    });
    const texts = async (query) => {
      const out = [];
      for await (const item of client.responses.inputItems.list(r.id, query)) out.push(item.content[0].text);
      return out;
    };
    return { desc: await texts({ limit: 1 }), asc: await texts({ limit: 2, order: 'asc' }) };
  },
  async function_call_streamed() {
    const tools = [
      {
        type: 'function',
        name: 'get_weather',
        description: 'The weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
        strict: true,
      },
    ];
    const stream = client.responses.stream({ model, input: 'call get_weather {"city":"Lima"}', tools });
    const types = [];
    stream.on('event', (e) => types.push(e.type));
    const first = await stream.finalResponse();
    const call = first.output.find((o) => o.type === 'function_call');
    const second = await client.responses.create({
      model,
      tools,
      previous_response_id: first.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: 'foggy, 17C' }],
    });
    return {
      types,
      call: { type: call.type, name: call.name, arguments: call.arguments, call_id: call.call_id, status: call.status },
      answer: second.output_text,
    };
  },
  async bad_request_streamed() {
    const stream = await client.responses.create({ model, input: 'hi', temperature: 7, stream: true });
    for await (const _ of stream);
    return 'accepted';
  },
  async not_found() {
    await client.responses.retrieve('resp_doesnotexist');
    return 'found';
  },
});
