"""Real LangChain objects (a fake chat model stands in for the paid API)."""

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

import flywheel
from flywheel.integrations.langchain import FlywheelCallbackHandler


@tool
def lookup_order(order_id: str) -> str:
    """Find an order."""
    if order_id == "bad":
        raise ValueError("no such order")
    return f"order {order_id}: shipped"


class Docs(BaseRetriever):
    def _get_relevant_documents(self, query, *, run_manager=None):
        return [
            Document(page_content="Orders ship in 2 days", metadata={"score": 0.9, "source": "kb"}, id="kb-1")
        ]


def test_a_chain_run_is_one_task_with_its_steps(settings, store):
    fw = flywheel.init("lc", settings=settings)
    handler = FlywheelCallbackHandler(fw, session_id="s-lc")
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{"name": "lookup_order", "args": {"order_id": "A7"}, "id": "call_1"}],
                )
            ]
        )
    )

    def run(question: str) -> str:
        docs = Docs().invoke(question)  # children inherit the handler from the parent run
        reply = model.invoke([HumanMessage(content=question)])
        call = reply.tool_calls[0]
        result = lookup_order.invoke(call["args"])
        return f"{docs[0].page_content}; {result}"

    chain = RunnableLambda(run)
    answer = chain.invoke("Where is A7?", config={"callbacks": [handler]})
    fw.flush()
    fw.close()
    tasks, _ = store.list_tasks(workload="lc")
    assert len(tasks) == 1
    task = store.get_task(tasks[0].id)
    assert (task.session_id, task.input, task.success) == ("s-lc", "Where is A7?", True)
    assert task.output == answer
    assert [s.kind for s in task.steps] == ["retrieval", "llm_call", "tool_call"]
    retrieval, llm, tool_step = task.steps
    assert retrieval.data["documents"][0] == {
        "id": "kb-1",
        "content": "Orders ship in 2 days",
        "score": 0.9,
        "source": "kb",
    }
    assert llm.data["messages"] == [{"role": "user", "content": "Where is A7?"}]
    assert (
        llm.data["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_order"
    )
    assert tool_step.name == "lookup_order" and tool_step.data["output"] == "order A7: shipped"


def test_a_failing_tool_marks_the_task_failed(settings, store):
    fw = flywheel.init("lc", settings=settings)
    handler = FlywheelCallbackHandler(fw)
    chain = RunnableLambda(lambda q: lookup_order.invoke({"order_id": q}))
    with pytest.raises(ValueError, match="no such order"):
        chain.invoke("bad", config={"callbacks": [handler]})
    fw.flush()
    fw.close()
    task = store.get_task(store.list_tasks(workload="lc")[0][0].id)
    assert task.success is False and "no such order" in task.error
    assert task.steps[0].error == "ValueError: no such order"
