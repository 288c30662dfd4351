// Streams the upstream breaks mid-way (the test cuts every stream before this script runs): each SDK
// must raise its API error from the gateway's error event, never end as if the answer were whole.
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { apiKey, baseURL, runCases } from './common.mjs';

const openai = new OpenAI({ baseURL: baseURL + '/v1', apiKey, maxRetries: 0, timeout: 20000 });
const anthropic = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
const model = process.env.MH_CHAT_MODEL;
const said = 'Hello from node cut stream';

await runCases({
  async chat() {
    const stream = await openai.chat.completions.create({ model, messages: [{ role: 'user', content: said }], stream: true });
    const text = [];
    for await (const chunk of stream) text.push(chunk.choices[0]?.delta?.content ?? '');
    return text.join('');
  },
  async responses() {
    const stream = openai.responses.stream({ model, input: said });
    return (await stream.finalResponse()).status;
  },
  async anthropic() {
    const stream = anthropic.messages.stream({ model, max_tokens: 64, messages: [{ role: 'user', content: said }] });
    return (await stream.finalMessage()).stop_reason;
  },
});
