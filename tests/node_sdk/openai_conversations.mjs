// Conversations with the official openai Node SDK: create with items, add items, list them a page at
// a time through the SDK's auto-pagination (ConversationCursorPage follows last_id), a response
// bound to the conversation, delete, and the 404 after it.
import OpenAI from 'openai';
import { apiKey, baseURL, runCases } from './common.mjs';

const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey, maxRetries: 0, timeout: 20000 });
const model = process.env.MH_CHAT_MODEL;
const say = (text) => ({ type: 'message', role: 'user', content: [{ type: 'input_text', text }] });
let conversation;

await runCases({
  async create() {
    conversation = await client.conversations.create({
      items: [say('one'), say('two')],
      metadata: { topic: 'node' },
    });
    const added = await client.conversations.items.create(conversation.id, { items: [say('three'), say('four')] });
    return {
      id: conversation.id,
      object: conversation.object,
      metadata: conversation.metadata,
      created_at: conversation.created_at,
      added: { object: added.object, ids: added.data.map((i) => i.id), first_id: added.first_id, last_id: added.last_id, has_more: added.has_more },
    };
  },
  async respond() {
    const r = await client.responses.create({ model, input: 'five', conversation: conversation.id });
    return { id: r.id, output_text: r.output_text, conversation: r.conversation };
  },
  async list_paginated() {
    const pages = [];
    let page = await client.conversations.items.list(conversation.id, { limit: 2, order: 'asc' });
    pages.push({ ids: page.data.map((i) => i.id), has_more: page.has_more, last_id: page.last_id });
    while (page.hasNextPage()) {
      page = await page.getNextPage();
      pages.push({ ids: page.data.map((i) => i.id), has_more: page.has_more, last_id: page.last_id });
    }
    const items = [];
    for await (const item of client.conversations.items.list(conversation.id, { limit: 2, order: 'asc' })) {
      items.push({ id: item.id, type: item.type, role: item.role, text: item.content?.[0]?.text ?? null });
    }
    return { pages, items };
  },
  async retrieve_item() {
    const page = await client.conversations.items.list(conversation.id, { limit: 1 });
    const item = await client.conversations.items.retrieve(page.data[0].id, { conversation_id: conversation.id });
    return { listed: page.data[0].id, retrieved: item.id, type: item.type };
  },
  async update() {
    const updated = await client.conversations.update(conversation.id, { metadata: { topic: 'updated' } });
    return { id: updated.id, metadata: updated.metadata };
  },
  async delete() {
    const deleted = await client.conversations.delete(conversation.id);
    return { id: deleted.id, object: deleted.object, deleted: deleted.deleted };
  },
  async retrieve_deleted() {
    await client.conversations.retrieve(conversation.id);
    return 'found';
  },
});
