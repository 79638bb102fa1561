"""fractal-llm: map where LLM fine-tuning stops working, and measure how fractal that border is."""
