#!/usr/bin/env python3
"""The official DingTalk Stream SDK (PyPI `dingtalk-stream`) against a running dingtalk-mock.

A mock written by the same hands as our client agrees with it by construction; this script
drives the mock with DingTalk's own Python SDK instead, the way an app would, and checks that
the SDK gets what the real cloud gives it. One line per check, then `N passed, M failed`;
exit status 1 on any failure.

Usage (tests/official-sdk/run.sh does all of this):
    MOCK=https://127.0.0.1:PORT SSL_CERT_FILE=ca.pem REQUESTS_CA_BUNDLE=ca.pem \
        DINGTALK_OPENAPI_ENDPOINT=$MOCK python check_mock.py

The SDK reads DINGTALK_OPENAPI_ENDPOINT (utils.py) at import time; the script sets it from
MOCK before importing, and sets DingTalkStreamClient.OPEN_CONNECTION_API too in case a
version hard-codes it.
"""

import asyncio
import json
import logging
import os
import sys
import time
import urllib.request

MOCK = os.environ.get("MOCK", "https://127.0.0.1:9090").rstrip("/")
CLIENT_ID = os.environ.get("DINGTALK_CLIENT_ID", "dingmockclientid")
CLIENT_SECRET = os.environ.get("DINGTALK_CLIENT_SECRET", "mock-client-secret")
os.environ["DINGTALK_OPENAPI_ENDPOINT"] = MOCK

import requests  # noqa: E402  (after the env var the SDK reads at import)
import dingtalk_stream  # noqa: E402
from dingtalk_stream import AckMessage, ChatbotMessage  # noqa: E402
from dingtalk_stream.card_replier import AICardReplier, CardReplier  # noqa: E402

dingtalk_stream.DingTalkStreamClient.OPEN_CONNECTION_API = (
    MOCK + "/v1.0/gateway/connections/open"
)
# The SDK finds its local IP by "connecting" a UDP socket to 8.8.8.8: no packet is sent, but
# this script stays on loopback only.
dingtalk_stream.DingTalkStreamClient.get_host_ip = lambda self: "127.0.0.1"

BOUND = 15.0  # seconds: a failure bound, not a timing assertion

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    line = f"{'PASS' if ok else 'FAIL'} {name}"
    if not ok and detail:
        line += f" -- {detail}"
    print(line, flush=True)


class ErrorCounter(logging.Handler):
    """Counts the SDK's ERROR log records (it logs failed HTTP calls instead of raising)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(self.format(record))


errors = ErrorCounter()
for name in [
    "dingtalk_stream.client",
    "dingtalk_stream.handler",
    "dingtalk_stream.card_replier",
]:
    logging.getLogger(name).addHandler(errors)


def control(method, path, body=None):
    r = requests.request(method, MOCK + path, json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def say(**body):
    body.setdefault("sender_staff_id", "u1")
    return control("POST", "/_mock/messages", body)


class Handler(dingtalk_stream.ChatbotHandler):
    def __init__(self):
        super().__init__()
        self.queue = asyncio.Queue()
        self.seen_retry = 0

    async def process(self, callback):
        msg = ChatbotMessage.from_dict(callback.data)
        text = (msg.text.content if msg.text else "") or ""
        if text.strip() == "请重发" and self.seen_retry == 0:
            # A failed handler answers 500: not an ACK, so the cloud must deliver it again.
            self.seen_retry += 1
            await self.queue.put((msg, callback))
            return AckMessage.STATUS_SYSTEM_EXCEPTION, "try again"
        await self.queue.put((msg, callback))
        return AckMessage.STATUS_OK, "OK"


async def next_message(handler, msg_id, timeout=BOUND):
    """The next message with this msgId (others are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, None
        try:
            msg, cb = await asyncio.wait_for(handler.queue.get(), left)
        except asyncio.TimeoutError:
            return None, None
        if msg.message_id == msg_id:
            return msg, cb


async def until(pred, timeout=BOUND, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        await asyncio.sleep(every)
    return None


def outbox_entry(pred):
    for e in control("GET", "/_mock/outbox"):
        if pred(e):
            return e
    return None


def card(out_track_id):
    for c in control("GET", "/_mock/cards"):
        if c["out_track_id"] == out_track_id:
            return c
    return None


async def main():
    credential = dingtalk_stream.Credential(CLIENT_ID, CLIENT_SECRET)
    client = dingtalk_stream.DingTalkStreamClient(credential)
    handler = Handler()
    client.register_callback_handler(ChatbotMessage.TOPIC, handler)

    # 1. Gateway open, as the SDK registers.
    conn = await asyncio.to_thread(client.open_connection)
    check(
        "gateway open returns a wss endpoint and a ticket",
        conn
        and conn.get("endpoint", "").startswith(("wss://", "ws://"))
        and conn.get("ticket"),
        f"{conn}",
    )
    check(
        "gateway endpoint is wss:// (TLS, like the cloud)",
        conn and conn.get("endpoint", "").startswith("wss://"),
        f"{conn}",
    )

    # 2. The SDK's own loop: gateway + WebSocket with the ticket.
    runner = asyncio.create_task(client.start())
    connected = await until(lambda: control("GET", "/_mock/connections")["live"] >= 1)
    check("the SDK opens the WebSocket with its ticket", connected)

    # 3. A text message.
    said = say(text="你好 mock", sender_nick="张三")
    msg, cb = await next_message(handler, said["msg_id"])
    check(
        "text message parsed into ChatbotMessage",
        msg is not None
        and msg.message_type == "text"
        and msg.text.content == "你好 mock"
        and msg.sender_staff_id == "u1"
        and msg.sender_nick == "张三"
        and msg.conversation_type == "1"
        and msg.conversation_id == said["conversation_id"]
        and msg.session_webhook == said["session_webhook"]
        and msg.session_webhook_expired_time == said["session_webhook_expired_time"]
        and msg.robot_code == CLIENT_ID
        and isinstance(msg.create_at, int)
        and msg.sender_id
        and msg.chatbot_user_id,
        f"{msg and msg.to_dict()}",
    )
    text_msg = msg

    # 4. The SDK's ACK is recorded: code 200, same messageId.
    acked = await until(
        lambda: any(
            a.get("code") == 200
            and a.get("headers", {}).get("messageId") == (cb.headers.message_id if cb else None)
            for a in control("GET", "/_mock/acks")
        )
    )
    check("the SDK's ACK is recorded by the mock", acked)

    # 5. reply_text through the session webhook.
    if text_msg is not None:
        r = await asyncio.to_thread(handler.reply_text, "收到：你好", text_msg)
        e = await until(
            lambda: outbox_entry(
                lambda e: e["channel"] == "session_webhook" and e["text"] == "收到：你好"
            )
        )
        check(
            "reply_text lands in the outbox",
            r and r.get("errcode") == 0 and e and e["kind"] == "text" and e["at_user_ids"] == ["u1"],
            f"{r} {e}",
        )
        r = await asyncio.to_thread(handler.reply_markdown, "结果", "### 完成\n- ok", text_msg)
        e = await until(
            lambda: outbox_entry(
                lambda e: e["channel"] == "session_webhook" and e["kind"] == "markdown"
            )
        )
        check(
            "reply_markdown lands in the outbox",
            r and r.get("errcode") == 0 and e and e["content"].get("title") == "结果"
            and e["text"] == "### 完成\n- ok",
            f"{r} {e}",
        )
    else:
        check("reply_text lands in the outbox", False, "no text message")
        check("reply_markdown lands in the outbox", False, "no text message")

    # 6. richText with a picture.
    said = say(text="看这张图", msg_type="richText", rich_text_pictures=1)
    msg, _ = await next_message(handler, said["msg_id"])
    check(
        "richText with a picture parsed (text list and image list)",
        msg is not None
        and msg.message_type == "richText"
        and msg.get_text_list() == ["看这张图"]
        and msg.get_image_list() == said["download_codes"]
        and len(said["download_codes"]) == 1,
        f"{msg and msg.to_dict()} {said}",
    )

    # 7. A picture.
    said = say(text="", msg_type="picture")
    msg, _ = await next_message(handler, said["msg_id"])
    picture_msg = msg
    check(
        "picture message parsed (downloadCode)",
        msg is not None
        and msg.message_type == "picture"
        and msg.image_content.download_code == said["download_codes"][0]
        and msg.get_image_list() == said["download_codes"],
        f"{msg and msg.to_dict()}",
    )

    # 8. Group @-message, mentioning another user too.
    said = say(
        text="分析一下",
        sender_staff_id="u2",
        conversation_id="cidMockGroup==",
        conversation_title="项目群",
        at_users=["u9"],
        is_admin=True,
    )
    msg, _ = await next_message(handler, said["msg_id"])
    group_msg = msg
    staff_ids = [u.staff_id for u in (msg.at_users if msg else [])]
    check(
        "group @-message parsed (type 2, title, at list, leading space)",
        msg is not None
        and msg.conversation_type == "2"
        and msg.conversation_id == "cidMockGroup=="
        and msg.conversation_title == "项目群"
        and msg.is_in_at_list is True
        and msg.is_admin is True
        and msg.text.content == " 分析一下"
        and "u9" in staff_ids
        and any(u.dingtalk_id == msg.chatbot_user_id for u in msg.at_users),
        f"{msg and msg.to_dict()}",
    )

    # 9. Loose fields the cloud sends: no senderStaffId, createAt as a string, nulls.
    said = say(text="外部用户", no_sender_staff_id=True, create_at_as_string=True, null_fields=True)
    msg, _ = await next_message(handler, said["msg_id"])
    check(
        "a message without senderStaffId, createAt as string and nulls reaches the SDK",
        msg is not None
        and msg.sender_staff_id is None
        and isinstance(msg.create_at, str)
        and msg.sender_corp_id is None
        and msg.text.content == "外部用户",
        f"{msg and msg.to_dict()}",
    )

    # 10. A non-200 ACK is not an ACK: the message comes again, same msgId, new messageId.
    said = say(text="请重发")
    first, cb1 = await next_message(handler, said["msg_id"])
    again, cb2 = await next_message(handler, said["msg_id"], timeout=BOUND + 60)
    check(
        "a 500 ACK is not an ACK: redelivered with a new messageId and the same msgId",
        first is not None
        and again is not None
        and cb1.headers.message_id != cb2.headers.message_id,
        f"{cb1 and cb1.headers.message_id} {cb2 and cb2.headers.message_id}",
    )

    # 11. Ping echoed.
    control("POST", "/_mock/pings")
    echoed = await until(
        lambda: (lambda p: p and p[-1]["answered"] and p[-1]["echo_matches"])(
            control("GET", "/_mock/pings")
        )
    )
    check("SYSTEM ping echoed with its data", echoed, f"{control('GET', '/_mock/pings')}")

    # 12. disconnect: the SDK closes, the mock answers its close frame, the SDK reconnects.
    before = control("GET", "/_mock/connections")["opened"]
    t0 = time.monotonic()
    control("POST", "/_mock/disconnect")
    # Said while the SDK is between two sockets: the cloud keeps it for the next one.
    said = say(text="断线期间的消息")
    reconnected = await until(
        lambda: control("GET", "/_mock/connections")["opened"] > before
        and control("GET", "/_mock/connections")["live"] >= 1,
        timeout=BOUND,
        every=0.02,
    )
    took = time.monotonic() - t0
    check(
        "after disconnect the SDK reconnects within 2 s",
        reconnected and took <= 2.0,
        f"reconnected={bool(reconnected)} after {took:.2f} s",
    )
    msg, _ = await next_message(handler, said["msg_id"])
    check(
        "a message said during the reconnect is not lost",
        msg is not None and msg.text.content == "断线期间的消息",
    )

    # 13. Access token fetched and cached.
    n0 = control("GET", "/_mock/stats")["token_requests"]
    t1 = await asyncio.to_thread(client.get_access_token)
    t2 = await asyncio.to_thread(client.get_access_token)
    n1 = control("GET", "/_mock/stats")["token_requests"]
    check(
        "access token fetched once and cached",
        t1 and t1 == t2 and n1 - n0 == 1,
        f"{t1} {t2} requests {n1 - n0}",
    )

    # 14. Picture download: messageFiles/download gives a URL that serves the bytes.
    if picture_msg is not None:
        url = await asyncio.to_thread(
            handler.get_image_download_url, picture_msg.image_content.download_code
        )
        body = b""
        if url:
            r = await asyncio.to_thread(requests.get, url, timeout=10)
            body = r.content if r.ok else b""
        check(
            "picture download (robot/messageFiles/download) serves the bytes",
            url and body.startswith(b"\x89PNG"),
            f"url={url} bytes={body[:8]!r}",
        )
    else:
        check("picture download (robot/messageFiles/download) serves the bytes", False)

    # 15. Cards, as CardReplier / AICardReplier / ChatbotHandler call them.
    errors.records.clear()
    if text_msg is not None and group_msg is not None:
        replier = CardReplier(client, text_msg)
        cid = await asyncio.to_thread(
            replier.create_and_send_card, "tpl.mock.progress", {"status": "排队中"}
        )
        c = card(cid) if cid else None
        check(
            "CardReplier.create_and_send_card: card created and delivered to the user",
            cid and c and c["template_id"] == "tpl.mock.progress"
            and c["card_data"] == {"status": "排队中"}
            and c["spaces"] == ["dtv1.card//IM_ROBOT.u1"],
            f"{cid} {c} {errors.records}",
        )
        await asyncio.to_thread(replier.put_card_data, cid, {"status": "已完成"})
        c = card(cid) if cid else None
        check(
            "CardReplier.put_card_data updates the card",
            c and c["card_data"] == {"status": "已完成"} and c["updates"] == 1,
            f"{c} {errors.records}",
        )
        greplier = CardReplier(client, group_msg)
        gid = await asyncio.to_thread(
            greplier.create_and_deliver_card, "tpl.mock.progress", {"status": "运行中"}, at_sender=True
        )
        c = card(gid) if gid else None
        check(
            "CardReplier.create_and_deliver_card delivers to the group",
            c and c["spaces"] == ["dtv1.card//IM_GROUP.cidMockGroup=="] and not errors.records,
            f"{c} {errors.records}",
        )
        ai = AICardReplier(client, text_msg)
        aid = await asyncio.to_thread(ai.start, "tpl.mock.ai", {"title": "分析"})
        await asyncio.to_thread(ai.streaming, aid, "content", "第一段", True, False, False)
        await asyncio.to_thread(ai.streaming, aid, "content", "，第二段", True, False, False)
        await asyncio.to_thread(ai.streaming, aid, "content", "全文", False, True, False)
        await asyncio.to_thread(ai.finish, aid, {"title": "分析", "content": "全文"})
        c = card(aid) if aid else None
        streams = [x for x in (c["calls"] if c else []) if x["api"] == "PUT /v1.0/card/streaming"]
        check(
            "AICardReplier start/streaming/finish recorded (flowStatus, appended then full content)",
            c
            and c["card_data"].get("flowStatus") == "3"
            and c["streamed"].get("content") == "全文"
            and [s["body"]["content"] for s in streams] == ["第一段", "，第二段", "全文"]
            and c["finalized"] is True
            and c["calls"][0]["body"]["cardData"]["cardParamMap"]["flowStatus"] == "1"
            and not errors.records,
            f"{c} {errors.records}",
        )
        biz = await asyncio.to_thread(handler.reply_card, {"title": "旧卡片"}, text_msg)
        upd = await asyncio.to_thread(handler.update_card, biz, {"title": "旧卡片 已更新"})
        c = card(biz) if biz else None
        check(
            "ChatbotHandler.reply_card / update_card (robot interactive cards)",
            biz and c and c["card_data"] == {"title": "旧卡片 已更新"}
            and isinstance(upd, dict) and not errors.records,
            f"{biz} {upd} {c} {errors.records}",
        )
    else:
        for name in ["create_and_send_card", "put_card_data", "create_and_deliver_card", "AICardReplier", "reply_card"]:
            check(f"cards: {name}", False, "no message to reply to")

    # 16. Media upload. upload_to_dingtalk posts to the hard-coded
    # https://oapi.dingtalk.com/media/upload with the v1.0 token; requests.post is pointed at
    # the mock for that host only, so the SDK's own multipart request, token and parsing are
    # what is judged. The media_id is then downloadable like a received picture.
    real_post = requests.post

    def to_mock(url, *args, **kwargs):
        if url.startswith("https://oapi.dingtalk.com/"):
            url = MOCK + url[len("https://oapi.dingtalk.com"):]
        return real_post(url, *args, **kwargs)

    png = b"\x89PNG\r\n\x1a\nmock-chart"
    requests.post = to_mock
    try:
        media_id = await asyncio.to_thread(
            client.upload_to_dingtalk, png, "image", "chart.png", "image/png"
        )
    finally:
        requests.post = real_post
    uploads = control("GET", "/_mock/media")
    last = uploads[-1] if uploads else {}
    check(
        "upload_to_dingtalk (oapi media/upload) gets a media_id the mock recorded",
        media_id
        and media_id.startswith("@")
        and last.get("media_id") == media_id
        and last.get("type") == "image"
        and last.get("file_name") == "chart.png"
        and last.get("size") == len(png),
        f"{media_id} {uploads}",
    )
    url = await asyncio.to_thread(handler.get_image_download_url, media_id) if media_id else None
    body = b""
    if url:
        r = await asyncio.to_thread(requests.get, url, timeout=10)
        body = r.content if r.ok else b""
    check("the uploaded media downloads with its media_id", body == png, f"url={url} {body[:16]!r}")

    # Every callback ACKed with 200 in the end (the retried one included).
    pending = await until(lambda: control("GET", "/_mock/unacked")["unacked"] == 0)
    check("nothing left unacknowledged", pending, f"{control('GET', '/_mock/unacked')}")

    # The SDK's start() swallows CancelledError (it reconnects after 10 s), so the verdict is
    # printed and the process ends here rather than after a teardown that would never finish.
    runner.cancel()


def verdict():
    passed = sum(results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed or not results else 0)


async def run():
    # The verdict is given inside the loop: asyncio.run's teardown would wait forever for the
    # SDK's task, which swallows its cancellation.
    try:
        await asyncio.wait_for(main(), 300)
    except BaseException as e:  # a crash is a failure, not a traceback without a verdict
        check("the script ran to the end", False, repr(e))
    verdict()


if __name__ == "__main__":
    asyncio.run(run())
