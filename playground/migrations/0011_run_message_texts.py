import hashlib
import json
import uuid

from django.db import migrations, models


def wire_json(body) -> str:
    """As playground.upstream.wire_json, frozen here for this migration."""
    return json.dumps(body, ensure_ascii=False)


def split(text: str):
    """As playground.models.split_request, frozen here for this migration."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return text, None, []
    marker = json.dumps(f"messages-{uuid.uuid4().hex}")
    framed = wire_json({**body, "messages": json.loads(marker)})
    at = framed.index(marker)
    template = framed[:at] + framed[at + len(marker) :]
    pieces = [wire_json(m) for m in messages]
    if template[:at] + "[" + ", ".join(pieces) + "]" + template[at:] != text:
        return text, None, []
    return template, at, pieces


def store_texts_once(apps, schema_editor):
    """Each run's text as sent (or, for runs stored before the text was, its body) becomes a
    template and the ids of its messages' texts, each text stored once."""
    Run = apps.get_model("playground", "Run")
    MessageText = apps.get_model("playground", "MessageText")
    ids: dict[str, int] = {}
    for run in Run.objects.order_by("id").iterator(chunk_size=200):
        text = run.request_text or (wire_json(run.request_body) if run.request_body else "")
        run.request_template, run.request_messages_at, pieces = split(text)
        texts = []
        for piece in pieces:
            digest = hashlib.sha256(piece.encode()).hexdigest()
            if digest not in ids:
                ids[digest] = MessageText.objects.get_or_create(sha256=digest, defaults={"text": piece})[0].id
            texts.append(ids[digest])
        run.request_texts = texts
        run.save(update_fields=["request_template", "request_messages_at", "request_texts"])


def restore_texts(apps, schema_editor):
    Run = apps.get_model("playground", "Run")
    MessageText = apps.get_model("playground", "MessageText")
    for run in Run.objects.order_by("id").iterator(chunk_size=200):
        text = run.request_template
        if run.request_messages_at is not None:
            by_id = dict(MessageText.objects.filter(id__in=run.request_texts).values_list("id", "text"))
            at = run.request_messages_at
            pieces = [by_id[i] for i in run.request_texts]
            text = text[:at] + "[" + ", ".join(pieces) + "]" + text[at:]
        run.request_text = text
        run.request_body = json.loads(text) if text else {}
        run.save(update_fields=["request_text", "request_body"])


class Migration(migrations.Migration):
    dependencies = [
        ("playground", "0010_ledger_outlives_its_links"),
    ]

    operations = [
        migrations.CreateModel(
            name="MessageText",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sha256", models.CharField(max_length=64, unique=True)),
                ("text", models.TextField()),
            ],
        ),
        migrations.AddField(
            model_name="run",
            name="request_template",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="run",
            name="request_messages_at",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="run",
            name="request_texts",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(store_texts_once, restore_texts),
        migrations.RemoveField(model_name="run", name="request_body"),
        migrations.RemoveField(model_name="run", name="request_text"),
    ]
